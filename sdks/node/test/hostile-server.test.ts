// A hostile or wedged server, seen from the Node SDK: answers are read up to a limit, GETs give up
// at a deadline, copyOut stops at its byte and entry limits; typed errors, no endless memory.
import { createServer, type Server, type ServerResponse } from "node:http";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "vitest";
import { Boxlite, ResourceExhaustedError, TimeoutError } from "../src/index.js";
import { MAX_ANSWER, Transport } from "../src/transport.js";

const CHUNK = Buffer.alloc(65536, "x");
let server: Server;
let url: string;
let sent = 0;
let scratch: string;

/** A ustar header for a regular file `name` of `size` bytes. */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0);
  h.write("0000644\0", 100);
  h.write("0000000\0", 108);
  h.write("0000000\0", 116);
  h.write(size.toString(8).padStart(11, "0") + "\0", 124);
  h.write("00000000000\0", 136);
  h.write("        ", 148);
  h.write("0", 156);
  h.write("ustar\0" + "00", 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148);
  return h;
}

/** Writes `next()` until the client goes away, respecting backpressure. */
function endless(res: ServerResponse, next: () => Buffer): void {
  const pump = () => {
    while (!res.destroyed) {
      const chunk = next();
      sent += chunk.length;
      if (!res.write(chunk)) return void res.once("drain", pump);
    }
  };
  res.on("close", () => res.destroy());
  pump();
}

const BOX = { id: "b1", name: "b1", state: { status: "running" }, created_at: "2026-01-01T00:00:00Z" };

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "boxlite-hostile-"));
  server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === "/v1/boxes/b1") return void res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(BOX));
    if (path === "/v1/boxes/silent") return void res.writeHead(200, { "content-type": "application/json" }).flushHeaders();
    if (path === "/v1/boxes/b1/archive") {
      res.writeHead(200, { "content-type": "application/x-tar" });
      if (req.url?.includes("many")) {
        let i = 0;
        return endless(res, () => tarHeader(`root/f${i++}`, 0));
      }
      res.write(tarHeader("big", 8 ** 11 - 1));
      if (req.url?.includes("slow")) {
        const tick = setInterval(() => res.write("x"), 100);
        return void res.on("close", () => clearInterval(tick));
      }
      return endless(res, () => CHUNK);
    }
    res.writeHead(path === "/v1/metrics" ? 500 : 200, { "content-type": "application/json" });
    res.write('["');
    endless(res, () => CHUNK);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
  await rm(scratch, { recursive: true, force: true });
});

test("an endless JSON answer, error body or progress line is cut at its limit", async () => {
  const rt = Boxlite.rest(url);
  sent = 0;
  await expect(rt.listInfo()).rejects.toBeInstanceOf(ResourceExhaustedError);
  expect(sent).toBeGreaterThanOrEqual(MAX_ANSWER);
  expect(sent).toBeLessThan(MAX_ANSWER + (16 << 20));
  sent = 0;
  await expect(rt.metrics()).rejects.toBeInstanceOf(ResourceExhaustedError);
  expect(sent).toBeLessThan(16 << 20);
  sent = 0; // a pull's progress stream: one endless line
  await expect(rt.images.pull("busybox", () => {})).rejects.toBeInstanceOf(ResourceExhaustedError);
  expect(sent).toBeLessThan(16 << 20);
});

test("a silent server meets the deadline of a GET", async () => {
  const t = new Transport(url);
  const start = Date.now();
  await expect(t.json("GET", "/v1/boxes/silent", { deadlineMs: 1000 })).rejects.toBeInstanceOf(TimeoutError);
  expect(Date.now() - start).toBeLessThan(10_000);
});

test("copyOut stops at its byte and entry limits and its deadline", async () => {
  const box = (await Boxlite.rest(url).get("b1"))!;
  sent = 0;
  await expect(box.copyOut("/big", join(scratch, "big"), { maxBytes: 4 << 20 })).rejects.toBeInstanceOf(
    ResourceExhaustedError,
  );
  expect(sent).toBeLessThan(64 << 20);
  await expect(box.copyOut("/many", join(scratch, "many"), { maxEntries: 1000 })).rejects.toBeInstanceOf(
    ResourceExhaustedError,
  );
  await expect(box.copyOut("/slow", join(scratch, "slow"), { timeoutMs: 500, maxBytes: 2 ** 40 })).rejects.toBeInstanceOf(
    TimeoutError,
  );
  // Nothing half-copied is left at the destinations.
  expect(await readdir(scratch)).toEqual([]);
});

test("a failed copyOut leaves an existing destination as it was", async () => {
  const box = (await Boxlite.rest(url).get("b1"))!;
  const keep = join(scratch, "keep");
  await mkdir(keep);
  await writeFile(join(keep, "big"), "mine");
  for (const dest of [keep, join(keep, "big")]) {
    await expect(box.copyOut("/big", dest, { maxBytes: 1 << 20 })).rejects.toBeInstanceOf(ResourceExhaustedError);
    expect(await readdir(keep)).toEqual(["big"]); // no staging directory left either
    expect(await readFile(join(keep, "big"), "utf8")).toBe("mine");
  }
  await rm(keep, { recursive: true });
});
