import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

export default defineConfig({
  test: {
    globalSetup: ["test/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    env: {
      // The tests run the Python package of this checkout (python -m boxlite.server).
      PYTHONPATH: [join(repo, "src"), process.env.PYTHONPATH].filter(Boolean).join(":"),
      BOXLITE_ENGINE: process.env.BOXLITE_ENGINE ?? "namespace",
    },
  },
});
