// Boxes: lifecycle, files, metrics, Symbol.asyncDispose, errors.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, inject, test } from "vitest";
import { AlreadyExistsError, Boxlite, BoxliteError, ConfigError, InvalidStateError, NotFoundError, SimpleBox } from "../src/index.js";

const rootfsPath = inject("rootfs");
let runtime: Boxlite;

beforeAll(async () => {
  runtime = await Boxlite.local();
});

afterAll(async () => {
  await runtime?.shutdown();
});

test("create, inspect, start, stop, remove", async () => {
  const box = await runtime.create({ rootfsPath, autoRemove: false, memoryMib: 128 }, "node-crud");
  expect(box.name).toBe("node-crud");
  expect((await box.info()).status).toBe("configured");
  expect((await box.info()).memoryMib).toBe(128);
  await expect(runtime.create({ rootfsPath }, "node-crud")).rejects.toBeInstanceOf(AlreadyExistsError);
  const [same, created] = await runtime.getOrCreate({ rootfsPath }, "node-crud");
  expect([same.id, created]).toEqual([box.id, false]);
  await box.start();
  expect((await box.info()).state.running).toBe(true);
  expect((await runtime.listInfo("running")).map((i) => i.id)).toContain(box.id);
  await expect(runtime.remove(box.id)).rejects.toBeInstanceOf(InvalidStateError);
  await box.stop();
  expect((await runtime.getInfo(box.id))?.status).toBe("stopped");
  await runtime.remove(box.id);
  expect(await runtime.get(box.id)).toBeNull();
  await expect(runtime.remove(box.id)).rejects.toBeInstanceOf(NotFoundError);
  await expect(runtime.create({ rootfsPath, memoryMib: 1 })).rejects.toBeInstanceOf(ConfigError);
});

test("the tests' private server keeps its boxes in the throwaway home, not ~/.boxlite", async () => {
  await using box = await new SimpleBox({ rootfsPath, runtime }).start();
  expect(process.env.BOXLITE_HOME).toBe(inject("home"));
  expect(existsSync(join(inject("home"), "boxes", box.id))).toBe(true);
});

test("copyIn and copyOut", async () => {
  await using box = await new SimpleBox({ rootfsPath, runtime }).start();
  const dir = await mkdtemp(join(tmpdir(), "boxlite-copy-"));
  const src = join(dir, "data");
  await mkdir(join(src, "sub"), { recursive: true });
  await writeFile(join(src, "a.txt"), "alpha\n");
  const blob = Buffer.alloc(1 << 20, 7);
  await writeFile(join(src, "sub", "b.bin"), blob);
  await box.copyIn(src, "/tmp");
  const r = await box.exec("sh", "-c", "cat /tmp/data/a.txt; wc -c < /tmp/data/sub/b.bin");
  expect(r.stdout.split(/\s+/).filter(Boolean)).toEqual(["alpha", String(1 << 20)]);
  await box.copyIn(join(src, "a.txt"), "/tmp/renamed.txt");
  expect((await box.exec("cat", "/tmp/renamed.txt")).stdout).toBe("alpha\n");
  const out = join(dir, "out");
  await mkdir(out);
  await box.copyOut("/tmp/data", out);
  expect(await readFile(join(out, "data", "a.txt"), "utf8")).toBe("alpha\n");
  expect((await readFile(join(out, "data", "sub", "b.bin"))).equals(blob)).toBe(true);
  // Again into the same directory: merged (the host's own files stay), overwriting unless told not to.
  await writeFile(join(out, "data", "host.txt"), "host\n");
  await box.exec("sh", "-c", "echo beta > /tmp/data/a.txt");
  await box.copyOut("/tmp/data", out, { overwrite: false });
  expect(await readFile(join(out, "data", "a.txt"), "utf8")).toBe("alpha\n");
  await box.copyOut("/tmp/data", out);
  expect(await readFile(join(out, "data", "a.txt"), "utf8")).toBe("beta\n");
  expect(await readFile(join(out, "data", "host.txt"), "utf8")).toBe("host\n");
  expect((await readdir(out)).sort()).toEqual(["data"]);
  await box.copyOut("/tmp/renamed.txt", join(dir, "single.txt"));
  expect(await readFile(join(dir, "single.txt"), "utf8")).toBe("alpha\n");
  await expect(box.copyOut("/does/not/exist", out)).rejects.toBeInstanceOf(NotFoundError);
  await expect(box.copyIn(join(dir, "missing"), "/tmp")).rejects.toBeInstanceOf(NotFoundError);
  await rm(dir, { recursive: true, force: true });
  const m = await box.metrics();
  expect(m.bytesSentTotal).toBeGreaterThan(1 << 20);
  expect(m.commandsExecutedTotal).toBeGreaterThanOrEqual(2);
});

test("await using stops (and auto-removes) the box", async () => {
  let id = "";
  {
    await using box = await new SimpleBox({ rootfsPath, runtime }).start();
    id = box.id;
    expect((await box.info()).state.running).toBe(true);
  }
  expect(await runtime.getInfo(id)).toBeNull();
  expect((await runtime.metrics()).boxesCreatedTotal).toBeGreaterThan(0);
});

test("images", async () => {
  expect(await runtime.images.list()).toEqual([]);
  await expect(runtime.images.remove("example.invalid/none:latest")).rejects.toBeInstanceOf(NotFoundError);
  await expect(runtime.images.pull("Not A Reference")).rejects.toBeInstanceOf(BoxliteError);
  const seen: unknown[] = [];
  await expect(runtime.images.pull("Not A Reference", (p) => seen.push(p))).rejects.toBeInstanceOf(BoxliteError);
  expect(await runtime.images.gc()).toBeGreaterThanOrEqual(0);
});
