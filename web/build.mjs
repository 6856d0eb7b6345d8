// Builds the demo page into src/cowrite/web_dist/ (gitignored), where
// `cowrite serve` finds it (cowrite.web.STATIC_DIR):
//
//   web_dist/index.html   the page           -> served at /
//   web_dist/app.js       src/main.js bundled with socket.io-client and yjs
//   web_dist/app.js.map
//   web_dist/style.css
//
// Usage: node build.mjs [--watch] [--dev]   (--dev: no minification)
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "src", "cowrite", "web_dist");
const watch = process.argv.includes("--watch");
const dev = watch || process.argv.includes("--dev");

const copyPages = {
  name: "copy-pages",
  setup(build) {
    build.onEnd(async (result) => {
      if (result.errors.length) return;
      for (const name of ["index.html", "style.css"]) {
        await copyFile(join(here, name), join(outdir, name));
      }
    });
  },
};

const options = {
  entryPoints: [join(here, "src", "main.js")],
  outfile: join(outdir, "app.js"),
  bundle: true,
  format: "esm",
  platform: "browser",
  // What the page uses (optional chaining, async/await, EventTarget, ...).
  target: ["es2020"],
  minify: !dev,
  sourcemap: true,
  legalComments: "eof", // third-party licence notices stay in app.js
  logLevel: "info",
  plugins: [copyPages],
};

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log(`watching web/ -> ${outdir}`);
} else {
  await esbuild.build(options);
}
