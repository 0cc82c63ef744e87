// A server at a URL: TCP with an API key (started like `boxlite serve --host --port --api-key`).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, inject, test } from "vitest";
import { Boxlite, PermissionDeniedError, SimpleBox, UnauthorizedError } from "../src/index.js";

const rootfsPath = inject("rootfs");
const KEY = "node-test-key";
let server: ChildProcess;
let url: string;
let home: string;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

beforeAll(async () => {
  home = join(await mkdtemp(join(tmpdir(), "boxlite-remote-")), "home");
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  server = spawn(process.env.BOXLITE_PYTHON ?? "python3",
    ["-m", "boxlite.server", "--home", home, "--host", "127.0.0.1", "--port", String(port), "--api-key", KEY,
      "--allow-host-path", rootfsPath],
    { stdio: ["pipe", "ignore", "inherit"] });
  const rt = Boxlite.rest(url, KEY);
  for (let i = 0; i < 200; i++) {
    if (await rt.listInfo().then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error("server did not start");
});

afterAll(async () => {
  const exited = new Promise((r) => server.once("exit", r));
  server.kill("SIGTERM");
  await exited;
  await rm(join(home, ".."), { recursive: true, force: true });
});

test("SimpleBox with a url and key", async () => {
  await using box = await new SimpleBox({ rootfsPath, url, apiKey: KEY }).start();
  const r = await box.exec("sh", "-c", "echo remote; exit 4");
  expect([r.exitCode, r.stdout]).toEqual([4, "remote\n"]);
});

test("only the host path the server lists is allowed over TCP", async () => {
  const rt = Boxlite.rest(url, KEY);
  for (const path of ["/", join(rootfsPath, "bin")]) {
    await expect(rt.create({ rootfsPath: path })).rejects.toBeInstanceOf(PermissionDeniedError);
  }
  expect(await rt.listInfo()).toEqual([]);
});

test("a wrong or missing key is refused and creates nothing", async () => {
  for (const key of [undefined, "wrong"]) {
    const rt = Boxlite.rest(url, key);
    await expect(rt.create({ rootfsPath })).rejects.toBeInstanceOf(UnauthorizedError);
    await expect(rt.listInfo()).rejects.toBeInstanceOf(UnauthorizedError);
  }
  const owner = Boxlite.rest(url, KEY);
  const box = await owner.create({ rootfsPath });
  const intruder = Boxlite.rest(url, "wrong");
  const before = (await owner.metrics()).totalCommandsExecuted;
  const stolen = new (box.constructor as new (rt: Boxlite, info: unknown) => typeof box)(intruder, await box.info());
  await expect(stolen.exec("touch", ["/pwned"])).rejects.toBeInstanceOf(UnauthorizedError);
  expect((await owner.metrics()).totalCommandsExecuted).toBe(before);
  expect((await owner.listInfo()).map((i) => i.id)).toEqual([box.id]);
  await owner.remove(box.id, true);
});
