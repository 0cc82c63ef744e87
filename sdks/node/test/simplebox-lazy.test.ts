// SimpleBox is created lazily by its first use (as BoxLite's Node SDK does), once even when
// first calls race, and never when it is not used.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, inject, test } from "vitest";
import { Boxlite, ConfigError, InvalidStateError, SimpleBox } from "../src/index.js";

const rootfsPath = inject("rootfs");
let runtime: Boxlite;

beforeAll(async () => {
  runtime = await Boxlite.local();
});

afterAll(async () => {
  await runtime?.shutdown();
});

async function count(name: string): Promise<number> {
  return (await runtime.listInfo()).filter((i) => i.name === name).length;
}

test("exec creates and starts the box on first use", async () => {
  const box = new SimpleBox({ rootfsPath, runtime, name: "lazy-exec" });
  expect(await runtime.get("lazy-exec")).toBeNull();
  expect(() => box.id).toThrow(InvalidStateError);
  await expect(box.info()).rejects.toBeInstanceOf(InvalidStateError);
  expect([box.name, box.created]).toEqual(["lazy-exec", undefined]);
  try {
    const r = await box.exec("sh", "-c", "echo hi; exit 3");
    expect([r.exitCode, r.stdout]).toEqual([3, "hi\n"]);
    expect(box.created).toBe(true);
    expect((await runtime.getInfo("lazy-exec"))?.state.running).toBe(true);
    expect(box.id).toBe((await runtime.get("lazy-exec"))?.id);
    expect((await box.exec("echo", "again")).stdout).toBe("again\n"); // the same box
    expect(await count("lazy-exec")).toBe(1);
  } finally {
    await box.stop();
  }
  expect(await runtime.get("lazy-exec")).toBeNull(); // autoRemove by default
});

test("concurrent first calls create one box", async () => {
  const box = new SimpleBox({ rootfsPath, runtime, name: "lazy-race" });
  try {
    const [a, b, id, info] = await Promise.all([
      box.exec("echo", "a"),
      box.exec("echo", "b"),
      box.getId(),
      box.getInfo(),
    ]);
    expect([a.stdout, b.stdout]).toEqual(["a\n", "b\n"]);
    expect(info.id).toBe(id);
    expect(await count("lazy-race")).toBe(1);
  } finally {
    await box.stop();
  }
});

test("copyIn and metrics are first uses too", async () => {
  const dir = await mkdtemp(join(tmpdir(), "boxlite-lazy-"));
  await writeFile(join(dir, "f.txt"), "lazy\n");
  await using box = new SimpleBox({ rootfsPath, runtime });
  await box.copyIn(join(dir, "f.txt"), "/tmp/f.txt");
  expect((await box.exec("cat", "/tmp/f.txt")).stdout).toBe("lazy\n");
  await box.copyOut("/tmp/f.txt", join(dir, "back.txt"));
  expect(await readFile(join(dir, "back.txt"), "utf8")).toBe("lazy\n");
  expect((await new SimpleBox({ rootfsPath, runtime }).metrics()).commandsExecutedTotal).toBeGreaterThanOrEqual(0);
  await rm(dir, { recursive: true, force: true });
});

test("an unused SimpleBox creates nothing; a failed creation is retried by the next call", async () => {
  const before = (await runtime.listInfo()).length;
  {
    await using unused = new SimpleBox({ rootfsPath, runtime, name: "never" });
    expect(unused.name).toBe("never");
  }
  expect(await runtime.get("never")).toBeNull();
  expect((await runtime.listInfo()).length).toBe(before);
  const bad = new SimpleBox({ rootfsPath, runtime, memoryMib: 1 });
  await expect(bad.exec("true")).rejects.toBeInstanceOf(ConfigError);
  await expect(bad.exec("true")).rejects.toBeInstanceOf(ConfigError); // tried again, not a cached failure
  await bad.stop();
  // start() still creates up front, and again after a stop
  const eager = await new SimpleBox({ rootfsPath, runtime, autoRemove: false, name: "eager" }).start();
  try {
    expect((await runtime.getInfo("eager"))?.state.running).toBe(true);
    await eager.stop();
    await eager.start();
    expect((await eager.exec("echo", "back")).stdout).toBe("back\n");
  } finally {
    await eager.stop();
    await runtime.remove("eager", true);
  }
});
