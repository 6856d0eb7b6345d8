// Drives the demo page's snapshots in Debian's Chromium (playwright-core).
// Started by test_demo_snapshots.py; prints one JSON report on stdout and
// exits 0, or prints the failure on stderr and exits 1.
//
// Environment: as demo_driver.mjs, plus COWRITE_COMPACT_CMD (a JSON array:
// the `cowrite compact` command line to run against the server's store).
//
// Scenario, every wait bounded:
//  1. Ada opens a document with ?snapshotEvery=20 and types 60 characters,
//     one keystroke at a time: her page stores a snapshot (store-snapshot)
//     once 20 operations passed.
//  2. `cowrite compact --keep-ops 0 --keep-days 0` deletes the operations the
//     snapshot covers; Ada types a few more characters.
//  3. Linus opens the document: his page starts from the snapshot (received)
//     plus the operations after it, and shows Ada's text.

import { execFileSync } from "node:child_process";
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
const compactCmd = JSON.parse(need("COWRITE_COMPACT_CMD"));
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const { chromium } = createRequire(join(webDir, "package.json"))("playwright-core");

const DOC = `snap-${Date.now().toString(36)}`;
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"];

const report = { document: DOC, screenshots: [], pageErrors: [], consoleErrors: [] };
const opened = [];

async function open(browser, name, user, extra = "") {
  const url = `${base}/?doc=${encodeURIComponent(DOC)}&name=${name}&user=${user}${extra}`;
  const who = { name, user, ...(await openPage(browser, report, name, url)) };
  opened.push(who);
  return who;
}

const shot = (who, label) => screenshot(report, outDir, who, label);

const text = editorText;
const status = pageStatus;

const waitStatus = (who, what, test) =>
  waitFor(`${who.name}: ${what}`, async () => {
    const s = await status(who);
    return { ok: test(s), ...s };
  });

const browser = await chromium.launch({ executablePath, headless: true, args: ARGS, timeout: STEP_MS });
try {
  // 1. Ada types; her page stores a snapshot after 20 operations.
  const ada = await open(browser, "Ada", "ada", "&snapshotEvery=20");
  await waitStatus(ada, "connected", (s) => s.state === "connected");
  await ada.page.click("#editor");
  const first = "The quick brown fox jumps over the lazy dog, twice: again!";
  await ada.page.keyboard.type(first, { delay: 25 });
  const stored = await waitStatus(
    ada,
    "a stored snapshot",
    (s) => s.pending === 0 && s.snapshotSource === "stored" && s.snapshotSeq >= 20,
  );
  report.stored = stored;
  await shot(ada, "snapshot-stored");

  // 2. Compaction, then a few more edits after the snapshot.
  report.compact = execFileSync(compactCmd[0], compactCmd.slice(1), { encoding: "utf8", timeout: 30_000 });
  const more = " Then more.";
  await ada.page.keyboard.type(more, { delay: 25 });
  await waitStatus(ada, "nothing pending", (s) => s.state === "connected" && s.pending === 0);
  // Let a snapshot Ada may store now (every 20 operations) settle first.
  await new Promise((r) => setTimeout(r, 1200));
  const adaText = await text(ada);

  // 3. Linus starts from the snapshot.
  const linus = await open(browser, "Linus", "linus");
  await waitStatus(linus, "connected", (s) => s.state === "connected");
  await waitFor("Linus has Ada's text", async () => {
    const got = await text(linus);
    return { ok: got === adaText, got };
  });
  await shot(linus, "joined-from-snapshot");
  report.typed = first + more;
  report.final = { ada: await text(ada), linus: await text(linus) };
  report.status = { ada: await status(ada), linus: await status(linus) };
} catch (err) {
  console.error(err?.stack || String(err));
  for (const who of opened) await shot(who, "failure").catch(() => {});
  console.error(JSON.stringify(report, null, 1));
  await browser.close().catch(() => {});
  process.exit(1);
}
await browser.close();
console.log(JSON.stringify(report));
