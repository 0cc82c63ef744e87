// Pull from a local registry (the Python test helpers start it), run the image, remove it.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, inject, test } from "vitest";
import { Boxlite, NotFoundError, type PullProgress, SimpleBox } from "../src/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const repo = inject("repo");
let registry: ChildProcess;
let ref = "";
let dir = "";
let runtime: Boxlite;

beforeAll(async () => {
  registry = spawn(process.env.BOXLITE_PYTHON ?? "python3", [join(here, "registry.py")], {
    env: { ...process.env, PYTHONPATH: `${join(repo, "tests")}:${join(repo, "src")}` },
    stdio: ["pipe", "pipe", "inherit"],
  });
  ref = await new Promise<string>((resolve, reject) => {
    let out = "";
    registry.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolve(out.trim());
    });
    registry.once("exit", (code) => reject(new Error(`registry helper exited (${code})`)));
  });
  dir = await mkdtemp(join(tmpdir(), "boxlite-node-images-"));
  const home = join(dir, "home");
  const host = ref.split("/")[0];
  await mkdir(home);
  await writeFile(join(home, "config.json"), JSON.stringify({ image_registries: [{ host, transport: "http" }] }));
  runtime = await Boxlite.local({ home });
});

afterAll(async () => {
  await runtime?.shutdown();
  registry?.stdin?.end();
  if (registry && registry.exitCode === null) await new Promise((r) => registry.once("exit", r));
  await rm(dir, { recursive: true, force: true });
});

test("pull with progress, list, run, remove", async () => {
  const events: PullProgress[] = [];
  const info = await runtime.images.pull(ref, (p) => events.push(p));
  expect(info.reference).toBe(ref);
  expect(info.digest).toMatch(/^sha256:/);
  expect(events.some((e) => e.done)).toBe(true);
  expect((await runtime.images.list()).map((i) => i.reference)).toEqual([ref]);
  const box = await new SimpleBox({ image: ref, runtime }).start();
  try {
    expect((await box.exec("echo", "from-registry")).stdout).toBe("from-registry\n");
  } finally {
    await box.stop();
  }
  await runtime.images.remove(ref);
  expect(await runtime.images.list()).toEqual([]);
  await expect(runtime.images.pull(`${ref.split("/")[0]}/no-such-image:latest`)).rejects.toBeInstanceOf(NotFoundError);
});
