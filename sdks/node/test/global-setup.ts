// Once per run: check the Python interpreter the tests use, give them a throwaway runtime home,
// and build a busybox root filesystem with the Python test helper.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    rootfs: string;
    repo: string;
    home: string;
  }
}

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
// What the tests import: the server (`python -m boxlite.server`) and the helpers under tests/.
const PROBE = "import boxlite.server.listen, support.images, support.registry";
const PROBE_TIMEOUT_MS = 30_000;

/** The interpreter the tests and the SDK run (`$BOXLITE_PYTHON`, else `python3`), checked up front:
 * without the package the server never comes up and each test would wait out its hook timeout. */
function checkPython(python: string, env: NodeJS.ProcessEnv): void {
  const res = spawnSync(python, ["-c", PROBE], { env, encoding: "utf8", timeout: PROBE_TIMEOUT_MS });
  if (!res.error && res.status === 0) return;
  const why = res.error?.message ?? (res.stderr.trim().split("\n").pop() || `exit ${res.status}`);
  throw new Error(
    `BOXLITE_PYTHON=${python} cannot run BoxLite (${why}).\n` +
      `The Node tests need a Python with this checkout's boxlite package and its server extra, e.g.:\n` +
      `  python3 -m venv /tmp/boxlite-venv && /tmp/boxlite-venv/bin/pip install -e "${repo}[server,test]"\n` +
      `  BOXLITE_PYTHON=/tmp/boxlite-venv/bin/python npm test\n` +
      `(scripts/test.sh passes its $PYTHON on as BOXLITE_PYTHON.)`,
  );
}

export default function setup(project: TestProject): () => void {
  const python = process.env.BOXLITE_PYTHON ?? "python3";
  const pyEnv = { ...process.env, PYTHONPATH: `${join(repo, "tests")}:${join(repo, "src")}` };
  checkPython(python, pyEnv);
  const dir = mkdtempSync(join(tmpdir(), "boxlite-node-test-"));
  // A throwaway runtime home, never the user's ~/.boxlite: the private servers the SDK starts
  // (and the test workers, forked after this) inherit BOXLITE_HOME from this process.
  const home = join(dir, "home");
  mkdirSync(home);
  process.env.BOXLITE_HOME = home;
  const rootfs = process.env.BOXLITE_TEST_ROOTFS ?? join(dir, "busybox");
  if (!process.env.BOXLITE_TEST_ROOTFS) {
    execFileSync(python, [
      "-c", "import sys; from pathlib import Path; from support.images import build_busybox_rootfs as b; b(Path(sys.argv[1]))",
      rootfs,
    ], { env: pyEnv, stdio: "inherit" });
  }
  project.provide("rootfs", rootfs);
  project.provide("repo", repo);
  project.provide("home", home);
  return () => rmSync(dir, { recursive: true, force: true });
}
