// Drives the demo page in Debian's Chromium with playwright-core (from
// web/node_modules).  Started by test_demo_page.py; prints one JSON report on
// stdout and exits 0, or prints the failure on stderr and exits 1.
//
// Environment: COWRITE_BASE_URL (http://127.0.0.1:PORT), COWRITE_OUT_DIR
// (screenshots), COWRITE_WEB_DIR (where node_modules is), CHROMIUM
// (default /usr/bin/chromium).  Playwright launches Chromium with a fresh
// --user-data-dir under TMPDIR and never downloads a browser.
//
// Scenario, every wait bounded:
//  1. Ada and Grace open the same document; both see "connected" and a roster
//     of two.
//  2. Both type at the same position at the same time (interleaved
//     keystrokes); both end with the same text holding every character, each
//     person's keystrokes in the order typed.
//  3. Grace goes offline (network emulation) and keeps typing: her indicator
//     says offline with pending edits, Ada does not get them, Ada's roster
//     drops her; Ada types too.  Grace comes back: both converge, nothing
//     pending, roster of two again.
//  4. Linus joins late: the log alone gives him the same text.

import { mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import {
  STEP_MS,
  editorText,
  need,
  openPage,
  pageStatus,
  screenshot,
  waitFor,
} from "./driver_lib.mjs";

const base = need("COWRITE_BASE_URL");
const outDir = need("COWRITE_OUT_DIR");
const webDir = need("COWRITE_WEB_DIR");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const { chromium } = createRequire(join(webDir, "package.json"))("playwright-core");

const DOC = `doc-${Date.now().toString(36)}`;
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const report = { document: DOC, steps: [], screenshots: [], pageErrors: [], consoleErrors: [] };

function step(name, detail = {}) {
  report.steps.push({ name, t: Math.round(performance.now()), ...detail });
}

const opened = [];

async function open(browser, name, user) {
  const url = `${base}/?doc=${encodeURIComponent(DOC)}&name=${encodeURIComponent(name)}&user=${user}`;
  const who = { name, user, ...(await openPage(browser, report, name, url)) };
  opened.push(who);
  return who;
}

const shot = (who, label) => screenshot(report, outDir, who, label);

const text = editorText;
const status = pageStatus;
const roster = (who) => who.page.$$eval("#roster li .name", (els) => els.map((el) => el.textContent).sort());

const waitState = (who, state, extra = () => true) =>
  waitFor(`${who.name} ${state}`, async () => {
    const s = await status(who);
    return { ok: s.state === state && extra(s), ...s };
  });

const waitRoster = (who, names) =>
  waitFor(`${who.name}'s roster = ${names}`, async () => {
    const got = await roster(who);
    return { ok: JSON.stringify(got) === JSON.stringify([...names].sort()), got };
  });

async function waitSame(pages, expectedLength) {
  return waitFor("identical texts", async () => {
    const texts = await Promise.all(pages.map(text));
    const ok = texts.every((t) => t === texts[0]) && texts[0].length === expectedLength;
    return { ok, texts };
  });
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ARGS,
  timeout: STEP_MS,
});
try {
  // 1. Two people, one document.
  const ada = await open(browser, "Ada", "ada");
  const grace = await open(browser, "Grace", "grace");
  await waitState(ada, "connected");
  await waitState(grace, "connected");
  await waitRoster(ada, ["Ada", "Grace"]);
  await waitRoster(grace, ["Ada", "Grace"]);
  step("connected");

  // 2. Same position, same time.
  const adaTyped = "abcdefghij klmnopqrst 0123456789";
  const graceTyped = "ABCDEFGHIJ KLMNOPQRST !?#$%&*+=";
  await ada.page.click("#editor");
  await grace.page.click("#editor");
  const adaStart = await ada.page.$eval("#editor", (el) => el.selectionStart);
  const graceStart = await grace.page.$eval("#editor", (el) => el.selectionStart);
  // Keystrokes alternate, each pair sent at once: neither waits for the
  // other's edit to arrive before typing the next character.
  for (let i = 0; i < Math.max(adaTyped.length, graceTyped.length); i++) {
    await Promise.all([
      adaTyped[i] && ada.page.keyboard.type(adaTyped[i]),
      graceTyped[i] && grace.page.keyboard.type(graceTyped[i]),
    ]);
  }
  const typed = await waitSame([ada, grace], adaTyped.length + graceTyped.length);
  await waitState(ada, "connected", (s) => s.pending === 0);
  await waitState(grace, "connected", (s) => s.pending === 0);
  step("typed together", { adaStart, graceStart, text: typed.texts[0] });
  // Each sees the other's caret.
  await ada.page.waitForSelector(`.remote-caret[data-user-id="grace"]`, { timeout: STEP_MS });
  await grace.page.waitForSelector(`.remote-caret[data-user-id="ada"]`, { timeout: STEP_MS });
  await shot(ada, "typed-together");
  await shot(grace, "typed-together");

  // 3. Grace goes offline and keeps typing; Ada types too.
  await grace.context.setOffline(true);
  await waitState(grace, "offline");
  await waitRoster(ada, ["Ada"]);
  const graceOffline = "\nGrace wrote this offline.";
  const adaMeanwhile = "\nAda, online meanwhile.";
  await grace.page.keyboard.press("Control+End");
  await ada.page.keyboard.press("Control+End");
  await Promise.all([
    grace.page.keyboard.type(graceOffline, { delay: 10 }),
    ada.page.keyboard.type(adaMeanwhile, { delay: 10 }),
  ]);
  const offline = await waitState(grace, "offline", (s) => s.pending > 0);
  await waitState(ada, "connected", (s) => s.pending === 0);
  await new Promise((r) => setTimeout(r, 300)); // what would leak, would leak now
  const adaWhileApart = await text(ada);
  step("apart", { graceStatus: offline, adaText: adaWhileApart, graceText: await text(grace) });
  await shot(grace, "offline");
  await shot(ada, "while-grace-offline");

  await grace.context.setOffline(false);
  await waitState(grace, "connected", (s) => s.pending === 0);
  const total = adaTyped.length + graceTyped.length + graceOffline.length + adaMeanwhile.length;
  const merged = await waitSame([ada, grace], total);
  await waitRoster(ada, ["Ada", "Grace"]);
  await waitRoster(grace, ["Ada", "Grace"]);
  step("back online", { text: merged.texts[0] });
  await grace.page.waitForSelector(`.remote-caret[data-user-id="ada"]`, { timeout: STEP_MS });
  await shot(grace, "back-online");
  await shot(ada, "back-online");

  // Ada selects her line: Grace sees the selection in Ada's colour.
  await ada.page.$eval(
    "#editor",
    (el, line) => {
      const at = el.value.indexOf(line);
      el.focus();
      el.setSelectionRange(at, at + line.length, "forward");
    },
    adaMeanwhile.trim(),
  );
  await grace.page.waitForSelector(".remote-selection", { timeout: STEP_MS });
  const selected = await grace.page.$eval(".remote-selection", (el) => el.textContent);
  step("selection", { selected });
  report.selected = selected;
  await shot(grace, "sees-selection");

  // 4. A late joiner reads the same text from the log.
  const linus = await open(browser, "Linus", "linus");
  await waitState(linus, "connected");
  const late = await waitSame([ada, grace, linus], total);
  await waitRoster(ada, ["Ada", "Grace", "Linus"]);
  step("late joiner", { text: late.texts[2] });
  await shot(linus, "late-joiner");

  report.typed = { ada: adaTyped, grace: graceTyped, graceOffline, adaMeanwhile };
  report.final = { ada: await text(ada), grace: await text(grace), linus: await text(linus) };
  report.adaWhileApart = adaWhileApart;
  report.status = { ada: await status(ada), grace: await status(grace), linus: await status(linus) };
} catch (err) {
  console.error(err?.stack || String(err));
  for (const who of opened) await shot(who, "failure").catch(() => {});
  console.error(JSON.stringify(report, null, 1));
  await browser.close().catch(() => {});
  process.exit(1);
}
await browser.close();
mkdirSync(outDir, { recursive: true });
console.log(JSON.stringify(report));
