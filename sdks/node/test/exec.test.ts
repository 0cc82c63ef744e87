// The behaviours of tests/core/test_exec.py, through a private local server.
import { afterAll, beforeAll, describe, expect, inject, test } from "vitest";
import { Boxlite, BoxliteError, ConfigError, ExecError, InvalidStateError, SimpleBox, TimeoutError } from "../src/index.js";

const rootfsPath = inject("rootfs");
let runtime: Boxlite;
let box: SimpleBox;

beforeAll(async () => {
  runtime = await Boxlite.local();
  box = await new SimpleBox({ rootfsPath, runtime }).start();
});

afterAll(async () => {
  await box?.stop();
  await runtime?.shutdown();
});

describe("exec", () => {
  test("a command too large for one request is a ConfigError, and the box carries on", async () => {
    // arguments + environment over the agent protocol's 1 MiB frame (was a closed connection)
    await expect(box.exec("true", "y".repeat(2 << 20))).rejects.toBeInstanceOf(ConfigError);
    await expect(box.box.exec("env", [], { env: { BIG: "x".repeat(2 << 20) } })).rejects.toThrow(/too large/);
    expect((await box.exec("echo", "fine")).stdout).toBe("fine\n");
  });

  test("returns output and exit code", async () => {
    const r = await box.exec("sh", "-c", "echo out; echo err >&2; exit 3");
    expect([r.exitCode, r.stdout, r.stderr]).toEqual([3, "out\n", "err\n"]);
  });

  test("output is streamed as produced", async () => {
    const execution = await box.box.exec("sh", ["-c", "echo first; sleep 2; echo second"]);
    const t0 = Date.now();
    const it = execution.stdout()[Symbol.asyncIterator]();
    expect((await it.next()).value).toBe("first\n");
    expect(Date.now() - t0).toBeLessThan(1500);
    expect((await it.next()).value).toBe("second\n");
    expect((await execution.wait()).exitCode).toBe(0);
  });

  test("stdout and stderr keep their order", async () => {
    const r = await box.exec("sh", "-c", "for i in $(seq 1 2000); do echo $i; echo e$i >&2; done");
    expect(r.stdout.split("\n").filter(Boolean)).toEqual(Array.from({ length: 2000 }, (_, i) => String(i + 1)));
    expect(r.stderr.split("\n").filter(Boolean)).toEqual(Array.from({ length: 2000 }, (_, i) => `e${i + 1}`));
  });

  test("large output arrives intact", async () => {
    const execution = await box.box.exec("dd", ["if=/dev/zero", "bs=1M", "count=64"], { stdin: false });
    let total = 0;
    for await (const chunk of execution.stdout().bytes()) total += chunk.length;
    expect(total).toBe(64 << 20);
    expect((await execution.wait()).exitCode).toBe(0);
  });

  test("unread output is flow controlled", async () => {
    const execution = await box.box.exec("yes", [], { stdin: false });
    await new Promise((r) => setTimeout(r, 1000));
    expect(execution.channel.stdout.total).toBeLessThanOrEqual(1 << 20);
    await execution.kill();
    expect((await execution.wait()).exitCode).toBe(128 + 9);
  });

  test("stdin round trip with flow control", async () => {
    const execution = await box.box.exec("cat");
    const payload = Buffer.alloc(2 << 20);
    for (let i = 0; i < payload.length; i++) payload[i] = i & 0xff;
    const stdin = execution.stdin();
    const reader = execution.stdout().readBytes();
    await stdin.sendInput(payload);
    await stdin.close();
    expect((await reader).equals(payload)).toBe(true);
    expect((await execution.wait()).exitCode).toBe(0);
  });

  test("exit code for a signal is 128+N", async () => {
    const r = await box.exec("sh", "-c", "kill -TERM $$");
    expect(r.exitCode).toBe(128 + 15);
    expect(r.errorMessage).toContain("SIGTERM");
  });

  test("signal reaches the process", async () => {
    const execution = await box.box.exec("sh", ["-c", "trap 'echo got-usr1; exit 0' USR1; echo ready; sleep 30 & wait"]);
    const out = execution.stdout()[Symbol.asyncIterator]();
    expect((await out.next()).value).toBe("ready\n");
    await execution.signal("SIGUSR1");
    expect((await out.next()).value).toBe("got-usr1\n");
    expect((await execution.wait()).exitCode).toBe(0);
  });

  test("kill terminates the process group", async () => {
    const execution = await box.box.exec("sh", ["-c", "sleep 100 & sleep 100"]);
    await new Promise((r) => setTimeout(r, 200));
    await execution.kill();
    const status = await execution.wait();
    expect([status.exitCode, status.signal]).toEqual([137, 9]);
    expect((await box.exec("ps")).stdout).not.toContain("sleep 100");
  });

  test("timeout kills and reports", async () => {
    const t0 = Date.now();
    await expect(box.exec("sleep", "30", { timeout: 0.5 })).rejects.toBeInstanceOf(TimeoutError);
    expect(Date.now() - t0).toBeLessThan(5000);
    const execution = await box.box.exec("sleep", ["30"], { timeoutSecs: 0.3 });
    const status = await execution.wait();
    expect(status.timedOut).toBe(true);
    expect(status.exitCode).toBe(137);
  });

  test("env, cwd and user", async () => {
    const r = await box.exec("sh", "-c", 'echo "$GREETING"; pwd; id -u; id -g', {
      env: { GREETING: "héllo wörld" }, cwd: "/tmp", user: "user",
    });
    expect(r.stdout.split("\n").slice(0, 4)).toEqual(["héllo wörld", "/tmp", "1000", "1000"]);
    expect((await box.exec("id", "-u", { user: "4242:4242" })).stdout.trim()).toBe("4242");
    expect((await box.exec("sh", "-c", "id -u; echo $HOME")).stdout.split(/\s+/).filter(Boolean)).toEqual(["0", "/root"]);
  });

  test("bad exec requests throw typed errors", async () => {
    await expect(box.exec("no-such-command")).rejects.toThrow(ExecError);
    await expect(box.exec("no-such-command")).rejects.toThrow(/not found/);
    await expect(box.exec("true", { user: "nobody-here" })).rejects.toThrow(/nobody-here/);
    await expect(box.exec("true", { cwd: "/does/not/exist" })).rejects.toThrow(/working directory/);
    expect((await box.exec("true")).exitCode).toBe(0);
  });

  test("many concurrent executions", async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => box.exec("sh", "-c", `echo ${i}; sleep 0.2`)));
    expect(results.map((r) => r.stdout.trim())).toEqual(Array.from({ length: 20 }, (_, i) => String(i)));
  });

  test("tty allocates a terminal and resizes", async () => {
    const execution = await box.box.exec("sh", [], { tty: true, rows: 30, cols: 100 });
    const stdin = execution.stdin();
    const stdout = execution.stdout();
    await stdin.sendInput("tty; stty size\n");
    let seen = "";
    for await (const chunk of stdout) {
      seen += chunk;
      if (seen.includes("30 100")) break;
    }
    expect(seen).toContain("/dev/pts/");
    await execution.resizeTty(40, 120);
    await stdin.sendInput("stty size; exit 5\n");
    for await (const chunk of stdout) seen += chunk;
    expect(seen).toContain("40 120");
    expect((await execution.wait()).exitCode).toBe(5);
  });

  test("output streams can be taken once", async () => {
    const execution = await box.box.exec("true", [], { stdin: false });
    execution.stdout();
    expect(() => execution.stdout()).toThrow(InvalidStateError);
    expect(() => execution.stderr()).not.toThrow(BoxliteError);
    await execution.wait();
  });
});
