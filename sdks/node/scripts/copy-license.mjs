// Copy the repository's LICENSE (Apache-2.0) into the package root, which `files` ships; one
// source of truth for the wheel and the npm package (sdks/node/LICENSE is ignored by git).
import { copyFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = resolve(dirname(fileURLToPath(import.meta.url)), "..");
copyFileSync(join(pkg, "..", "..", "LICENSE"), join(pkg, "LICENSE"));
