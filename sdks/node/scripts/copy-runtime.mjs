// Copy the VM runtime artifact (built by `make runtime` into <repo>/target/boxlite-runtime)
// into the package, if present. It is never rebuilt here.
import { cpSync, existsSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const source = process.env.BOXLITE_RUNTIME_ARTIFACT ?? join(pkg, "..", "..", "target", "boxlite-runtime");
const dest = join(pkg, "runtime");
rmSync(dest, { recursive: true, force: true });
if (existsSync(join(source, "manifest.json"))) {
  cpSync(source, dest, { recursive: true });
  console.log(`boxlite: bundled the runtime artifact from ${source}`);
} else {
  console.log(`boxlite: no runtime artifact at ${source} (run \`make runtime\`); the package will not bundle one`);
}
