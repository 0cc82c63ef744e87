// Builds a busybox root filesystem with the Python test helper, once per run.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestProject } from "vitest/node";

declare module "vitest" {
  export interface ProvidedContext {
    rootfs: string;
    repo: string;
  }
}

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export default function setup(project: TestProject): () => void {
  const dir = mkdtempSync(join(tmpdir(), "boxlite-node-test-"));
  const rootfs = process.env.BOXLITE_TEST_ROOTFS ?? join(dir, "busybox");
  if (!process.env.BOXLITE_TEST_ROOTFS) {
    execFileSync(process.env.BOXLITE_PYTHON ?? "python3", [
      "-c", "import sys; from pathlib import Path; from support.images import build_busybox_rootfs as b; b(Path(sys.argv[1]))",
      rootfs,
    ], { env: { ...process.env, PYTHONPATH: `${join(repo, "tests")}:${join(repo, "src")}` }, stdio: "inherit" });
  }
  project.provide("rootfs", rootfs);
  project.provide("repo", repo);
  return () => rmSync(dir, { recursive: true, force: true });
}
