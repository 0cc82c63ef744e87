/** A private `boxlite serve` on a unix socket, owned by this Node process. */

import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BoxliteError } from "./errors.js";
import { Transport } from "./transport.js";

export interface LocalServerOptions {
  /** Runtime home (default: the server's `$BOXLITE_HOME` or `~/.boxlite`). */
  home?: string;
  /** Python interpreter with the `boxlite` package (default: `$BOXLITE_PYTHON` or `python3`). */
  python?: string;
  /** Full server command instead of `<python> -m boxlite.server` (e.g. `["boxlite", "serve"]`). */
  command?: string[];
  /** Extra environment variables for the server. */
  env?: Record<string, string>;
  /** How long to wait for the server to answer (default 30 s). */
  startTimeoutMs?: number;
}

/** The runtime artifact bundled in the npm package (copied from target/boxlite-runtime at build). */
function bundledRuntime(): string | undefined {
  const dir = join(dirname(fileURLToPath(import.meta.url)), "..", "runtime");
  return existsSync(join(dir, "manifest.json")) ? dir : undefined;
}

export class LocalServer {
  private constructor(
    readonly url: string,
    private readonly child: ChildProcess,
    private readonly dir: string,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  /**
   * Start the server and wait until it answers. It exits when this process exits, however that
   * happens: it stops at EOF on its stdin, which is a pipe only this process holds.
   */
  static async start(opts: LocalServerOptions = {}): Promise<LocalServer> {
    const dir = await mkdtemp(join(tmpdir(), "boxlite-"));
    const socket = join(dir, "boxlite.sock");
    const [cmd, ...base] = opts.command ?? [opts.python ?? process.env.BOXLITE_PYTHON ?? "python3", "-m", "boxlite.server"];
    const args = [...base, "--socket", socket, "--exit-on-stdin-eof", ...(opts.home ? ["--home", opts.home] : [])];
    const env: Record<string, string | undefined> = { ...process.env, ...opts.env };
    const runtime = bundledRuntime();
    if (runtime && !env.BOXLITE_RUNTIME_DIR) env.BOXLITE_RUNTIME_DIR = runtime;
    const child = spawn(cmd!, args, { stdio: ["pipe", "ignore", "pipe"], env });
    let stderr = "";
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-8192)));
    const exited = new Promise<never>((_, reject) => {
      child.once("error", (e) => reject(new BoxliteError(`cannot start ${cmd}: ${e.message}`)));
      child.once("exit", (code) => reject(new BoxliteError(`boxlite server exited (${code}): ${stderr.trim()}`)));
    });
    exited.catch(() => undefined);
    const server = new LocalServer(`unix://${socket}`, child, dir);
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
    const probe = new Transport(server.url);
    const deadline = Date.now() + (opts.startTimeoutMs ?? 30_000);
    try {
      for (;;) {
        const ok = await Promise.race([
          probe.json("GET", "/v1/health").then(() => true, () => false),
          exited,
        ]);
        if (ok) break;
        if (Date.now() > deadline) throw new BoxliteError(`boxlite server did not start: ${stderr.trim()}`);
        await Promise.race([new Promise((r) => setTimeout(r, 50)), exited]);
      }
    } catch (e) {
      await server.close();
      throw e;
    }
    // Do not keep the event loop alive for the server: when the program is done, Node exits,
    // the stdin pipe closes and the server shuts its boxes down.
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    return server;
  }

  /** Stop the server (its non-detached boxes stop with it) and wait for it to exit. */
  async close(timeoutMs = 20_000): Promise<void> {
    const child = this.child;
    if (child.exitCode === null && child.signalCode === null) {
      const done = new Promise((r) => child.once("exit", r));
      child.stdin?.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      await done;
      clearTimeout(timer);
    }
    await rm(this.dir, { recursive: true, force: true });
  }
}
