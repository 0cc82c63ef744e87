// The private server never outlives the Node process that started it.
import { execFileSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { beforeAll, expect, inject, test } from "vitest";

const here = dirname(fileURLToPath(import.meta.url));
const rootfsPath = inject("rootfs");

beforeAll(() => {
  execFileSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: resolve(here, ".."), stdio: "inherit" });
});

function alive(pid: number): boolean {
  try {
    // "pid (comm) S ...": a zombie (Z) has exited; this container's init may not reap it.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

async function gone(pid: number, ms = 20_000): Promise<boolean> {
  for (const t0 = Date.now(); Date.now() - t0 < ms; ) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

async function runChild(mode: "exit" | "kill"): Promise<{ server: number; box: number; code: number | null }> {
  const child = spawn(process.execPath, [join(here, "child.mjs"), rootfsPath, mode], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  const info = await new Promise<{ server: number; box: number }>((resolveInfo, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      out += d.toString();
      if (out.includes("\n")) resolveInfo(JSON.parse(out.split("\n")[0]!));
    });
    child.once("exit", (code) => reject(new Error(`child exited early (${code}): ${out}`)));
  });
  if (mode === "kill") child.kill("SIGKILL");
  const code = await new Promise<number | null>((r) => (child.exitCode !== null ? r(child.exitCode) : child.once("exit", r)));
  return { ...info, code };
}

test("a program that just ends exits, and its server and boxes stop", async () => {
  const r = await runChild("exit");
  expect(r.code).toBe(0);
  expect(await gone(r.server)).toBe(true);
  expect(await gone(r.box)).toBe(true);
});

test("kill -9 of the program stops its server and boxes too", async () => {
  const r = await runChild("kill");
  expect(await gone(r.server)).toBe(true);
  expect(await gone(r.box)).toBe(true);
});
