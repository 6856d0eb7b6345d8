// The demo page's looks, in Debian's Chromium (playwright-core from
// web/node_modules), at 1280x800 and 390x844.  Started by
// test_demo_screens.py; prints one JSON report on stdout and exits 0, or
// prints the failure on stderr and exits 1.  Screenshots: COWRITE_OUT_DIR.
//
// For each viewport, on a fresh document:
//  1. two users: Ada opens the document (she owns it); the page's share link
//     names the document only; clicking it opens a window that is someone else
//     (its own user, its own token); Grace opens the link in her own browser;
//  2. a remote caret: Grace puts her caret inside Ada's text; Ada sees it
//     with its name label placed where it hides no text;
//  3. offline with pending edits: Grace loses the network and keeps typing;
//  4. access denied: Ada sets "anyone with the link" to "cannot open it";
//     Carol opens the link and is refused;
//  5. a viewer: Ada sets the link to "can view"; Dan opens it read-only.
// Every wait is bounded; what the pages showed is measured here and checked in
// the Python test.

import { createRequire } from "node:module";
import { join } from "node:path";
import { STEP_MS, need, waitFor } from "./driver_lib.mjs";

const base = need("COWRITE_BASE_URL");
const outDir = need("COWRITE_OUT_DIR");
const webDir = need("COWRITE_WEB_DIR");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const { chromium } = createRequire(join(webDir, "package.json"))("playwright-core");

const VIEWPORTS = [
  { name: "desktop", width: 1280, height: 800 },
  { name: "phone", width: 390, height: 844 },
];
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--font-render-hinting=none",
];

const report = { viewports: {}, screenshots: [], pageErrors: [], consoleErrors: [], httpErrors: [] };
const pages = [];

function watch(page, name) {
  pages.push({ page, name });
  page.on("pageerror", (err) => report.pageErrors.push(`${name}: ${err.message}`));
  page.on("console", (msg) => {
    // A refused join is logged by nobody; a failed resource load would be.
    if (msg.type() === "error") report.consoleErrors.push(`${name}: ${msg.text()}`);
  });
  // Which request a "Failed to load resource" was (the console does not say).
  page.on("response", async (response) => {
    if (response.status() < 400) return;
    const body = await response.text().catch(() => "");
    report.httpErrors.push(
      `${name}: ${response.status()} ${response.request().method()} ${response.url()} ${body.slice(0, 200)} at ${Date.now()}`,
    );
  });
}

async function openIn(context, url, name) {
  const page = await context.newPage();
  watch(page, name);
  await page.goto(url, { timeout: STEP_MS });
  return page;
}

const status = (page) =>
  page.$eval("#status", (el) => ({ state: el.dataset.state, pending: Number(el.dataset.pending), label: el.textContent.trim() }));

const waitState = (page, name, state, extra = () => true) =>
  waitFor(`${name} ${state}`, async () => {
    const s = await status(page);
    return { ok: s.state === state && extra(s), ...s };
  });

async function shot(page, viewport, label) {
  const path = join(outDir, `${viewport.name}-${String(report.screenshots.length + 1).padStart(2, "0")}-${label}.png`);
  await page.screenshot({ path, timeout: STEP_MS });
  report.screenshots.push(path);
  return path;
}

// What a page shows, measured in the page.
function look(page) {
  return page.evaluate(() => {
    const box = (sel) => {
      const el = document.querySelector(sel);
      if (!el || el.hidden) return null;
      const r = el.getBoundingClientRect();
      return { left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height };
    };
    const role = document.getElementById("role");
    const message = document.getElementById("message");
    const editor = document.getElementById("editor");
    const link = document.getElementById("share-link");
    return {
      editor: box(".editor"),
      sidebar: box(".sidebar"),
      topbar: box(".topbar"),
      role: role.hidden ? null : { role: role.dataset.role, text: role.textContent.trim() },
      message: message.hidden ? null : message.textContent.trim(),
      placeholder: editor.placeholder,
      value: editor.value,
      readOnly: editor.readOnly,
      roster: [...document.querySelectorAll("#roster li")].map((li) => ({
        userId: li.dataset.userId,
        name: li.querySelector(".name").textContent,
        color: getComputedStyle(li.querySelector(".dot")).backgroundColor,
      })),
      rosterEmpty: !document.getElementById("roster-empty").hidden,
      linkAccess: !document.getElementById("link-access").hidden,
      share: { href: link.href, text: link.textContent },
      scrollWidth: document.documentElement.scrollWidth,
    };
  });
}

// A remote caret's label and the text rectangles it must not cover.
function caretLook(page, userId) {
  return page.evaluate((userId) => {
    const caret = document.querySelector(`.remote-caret[data-user-id="${userId}"]`);
    if (!caret) return null;
    const label = caret.querySelector(".remote-caret-label");
    const r = label.getBoundingClientRect();
    const content = document.querySelector(".cursor-content");
    const rects = [];
    const range = document.createRange();
    const walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!/\S/.test(node.data) || node.parentElement.closest(".remote-caret-label")) continue;
      range.selectNodeContents(node);
      for (const t of range.getClientRects()) if (t.width > 0.5) rects.push({ left: t.left, top: t.top, right: t.right, bottom: t.bottom });
    }
    const covered = rects.filter(
      (t) => r.left < t.right - 1 && t.left < r.right - 1 && r.top < t.bottom - 1 && t.top < r.bottom - 1,
    );
    const c = caret.getBoundingClientRect();
    const top = rects.length ? Math.min(...rects.map((t) => t.top)) : c.top;
    return {
      line: Math.round((c.top - top) / parseFloat(getComputedStyle(content).lineHeight)),
      place: label.dataset.place,
      crowded: label.classList.contains("crowded"),
      idle: caret.classList.contains("idle"),
      color: getComputedStyle(caret).borderLeftColor,
      label: { left: r.left, top: r.top, right: r.right, bottom: r.bottom },
      covered: covered.length,
      text: label.textContent,
    };
  }, userId);
}

async function scenario(browser, viewport) {
  const doc = `screens-${viewport.name}-${Date.now().toString(36)}`;
  const result = {};
  const newContext = () =>
    browser.newContext({ viewport: { width: viewport.width, height: viewport.height }, deviceScaleFactor: 1 });
  const adaContext = await newContext();
  const ada = await openIn(adaContext, `${base}/?doc=${encodeURIComponent(doc)}&user=ada&name=Ada`, `${viewport.name}/ada`);
  await waitState(ada, "Ada", "connected");
  await ada.click("#editor");
  const text = "The first line of our shared notes.\nA second line, a little longer than the first.\nEnd";
  await ada.keyboard.type(text);
  await waitState(ada, "Ada", "connected", (s) => s.pending === 0);

  // 1. The share link, clicked: another window that is someone else.
  const [popup] = await Promise.all([
    ada.waitForEvent("popup", { timeout: STEP_MS }),
    ada.click("#share-link"),
  ]);
  watch(popup, `${viewport.name}/popup`);
  await waitState(popup, "popup", "connected");
  result.popup = { url: popup.url(), look: await look(popup) };
  await popup.close();

  const shareHref = (await look(ada)).share.href;
  const graceContext = await newContext();
  const grace = await openIn(graceContext, `${shareHref}&user=grace&name=Grace`, `${viewport.name}/grace`);
  await waitState(grace, "Grace", "connected");
  await waitFor("Ada sees Grace", async () => {
    const l = await look(ada);
    return { ok: l.roster.length === 2, roster: l.roster };
  });
  result.twoUsers = { ada: await look(ada), grace: await look(grace), text };
  await shot(ada, viewport, "two-users-ada");
  await shot(grace, viewport, "two-users-grace");

  // 2. Grace's caret inside the second line, under the first line's text.
  await grace.$eval("#editor", (el) => {
    const at = el.value.indexOf("little");
    el.focus();
    el.setSelectionRange(at, at);
  });
  await grace.keyboard.press("ArrowRight"); // a real key: the page publishes the caret
  await ada.waitForSelector('.remote-caret[data-user-id="grace"]', { timeout: STEP_MS });
  const middle = await waitFor("Grace's caret label placed", async () => {
    const c = await caretLook(ada, "grace");
    return { ok: c !== null && c.line >= 1 && !c.idle, ...c };
  });
  await shot(ada, viewport, "remote-caret-middle");
  // ...then on the first line: there is room above it.
  await grace.keyboard.press("Control+Home");
  await grace.keyboard.press("ArrowRight");
  const first = await waitFor("Grace's caret on the first line", async () => {
    const c = await caretLook(ada, "grace");
    return { ok: c !== null && c.line === 0 && !c.idle, ...c };
  });
  await shot(ada, viewport, "remote-caret-first-line");
  result.caret = { middle, first };

  // 3. Grace offline, typing: pending edits.
  await graceContext.setOffline(true);
  await waitState(grace, "Grace", "offline");
  await grace.keyboard.press("Control+End");
  await grace.keyboard.type(" (written offline)", { delay: 5 });
  const offline = await waitState(grace, "Grace", "offline", (s) => s.pending > 0);
  result.offline = { status: offline, look: await look(grace) };
  await shot(grace, viewport, "offline-pending");
  await graceContext.setOffline(false);
  await waitState(grace, "Grace", "connected", (s) => s.pending === 0);

  // 4. Ada closes the link; Carol is refused.
  await ada.selectOption("#link-role", "");
  await waitFor("link closed", async () => ({ ok: !(await ada.$eval("#link-role", (el) => el.disabled)) }));
  const adaAfter = await look(ada);
  const carolContext = await newContext();
  const carol = await openIn(carolContext, `${shareHref}&user=carol&name=Carol`, `${viewport.name}/carol`);
  await waitState(carol, "Carol", "denied");
  await waitFor("Carol's page says so", async () => {
    const l = await look(carol);
    return { ok: l.role?.role === "none" && l.message !== null, ...l };
  });
  result.denied = { look: await look(carol), ada: adaAfter };
  await shot(carol, viewport, "access-denied");

  // 5. Ada lets the link view; Dan reads.
  await ada.selectOption("#link-role", "viewer");
  await waitFor("link viewer", async () => ({ ok: !(await ada.$eval("#link-role", (el) => el.disabled)) }));
  const danContext = await newContext();
  const dan = await openIn(danContext, `${shareHref}&user=dan&name=Dan`, `${viewport.name}/dan`);
  await waitState(dan, "Dan", "connected");
  await waitFor("Dan's text", async () => {
    const l = await look(dan);
    return { ok: l.value.includes("written offline"), value: l.value };
  });
  result.viewer = { look: await look(dan) };
  await shot(dan, viewport, "viewer");

  for (const context of [adaContext, graceContext, carolContext, danContext]) await context.close();
  return result;
}

const browser = await chromium.launch({ executablePath, headless: true, args: ARGS, timeout: STEP_MS });
try {
  for (const viewport of VIEWPORTS) {
    report.viewports[viewport.name] = { size: [viewport.width, viewport.height], ...(await scenario(browser, viewport)) };
  }
} catch (err) {
  console.error(err?.stack || String(err));
  for (const { page, name } of pages) {
    if (!page.isClosed()) {
      await page
        .screenshot({ path: join(outDir, `failure-${name.replace("/", "-")}.png`), timeout: STEP_MS })
        .catch(() => {});
    }
  }
  console.error(JSON.stringify(report, null, 1));
  await browser.close().catch(() => {});
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(report));
