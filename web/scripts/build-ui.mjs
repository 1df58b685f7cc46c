// Builds the web app into dist/ (committed; the Rust binary embeds it at compile time):
// app.js (esbuild bundle of src/app, minified), app.css and index.html (copied from static/).
// Deterministic: the same sources and lockfile give the same bytes, so CI can check that the
// committed bundle is current.

import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(web, "dist");
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: [join(web, "src/app/main.ts")],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  outfile: join(dist, "app.js"),
  logLevel: "warning",
});
for (const file of ["index.html", "app.css"]) {
  copyFileSync(join(web, "static", file), join(dist, file));
}
