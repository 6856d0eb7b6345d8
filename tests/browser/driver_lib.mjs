// Helpers shared by the browser drivers (demo_driver.mjs, screens_driver.mjs,
// snapshot_driver.mjs).

import { join } from "node:path";

/** Bound, in ms, of any single wait in the drivers. */
export const STEP_MS = 10_000;

/** The environment variable `name`; exits 2 when it is not set. */
export function need(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return value;
}

/** Polls `check()` (every 50 ms) until its result has `ok`; throws after `timeout` ms. */
export async function waitFor(what, check, timeout = STEP_MS) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await check();
    if (last.ok) return last;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A new browser context and page at `url`; the page's errors and console
 * errors are collected in `report.pageErrors` / `report.consoleErrors`.
 */
export async function openPage(browser, report, name, url) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 620 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => report.pageErrors.push(`${name}: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") report.consoleErrors.push(`${name}: ${msg.text()}`);
  });
  await page.goto(url, { timeout: STEP_MS });
  return { context, page };
}

/** A numbered screenshot of `who.page` in `outDir`, listed in `report.screenshots`. */
export async function screenshot(report, outDir, who, label) {
  const n = String(report.screenshots.length + 1).padStart(2, "0");
  const path = join(outDir, `${n}-${label}-${who.name}.png`);
  await who.page.screenshot({ path, timeout: STEP_MS });
  report.screenshots.push(path);
}

/** The editor's text on `who.page`. */
export const editorText = (who) => who.page.$eval("#editor", (el) => el.value);

/** What the page's status element says (its data attributes and label). */
export const pageStatus = (who) =>
  who.page.$eval("#status", (el) => ({
    state: el.dataset.state,
    pending: Number(el.dataset.pending),
    label: el.textContent.trim(),
    snapshotSeq: el.dataset.snapshotSeq === undefined ? null : Number(el.dataset.snapshotSeq),
    snapshotSource: el.dataset.snapshotSource ?? null,
  }));
