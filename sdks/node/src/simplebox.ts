/**
 * `SimpleBox`: a box created (and started) lazily by its first use, `exec`, `copyIn`,
 * `copyOut`, `metrics`, `getId` or `getInfo`, as BoxLite's Node SDK does; `start()` does it
 * up front. Commands run to completion; `stop()` / `await using` stop it (never created: nothing).
 */

import type { Box } from "./box.js";
import { ConfigError, InvalidStateError, TimeoutError } from "./errors.js";
import { Boxlite } from "./runtime.js";
import type { BoxInfo, BoxMetrics, BoxOptions, CopyOptions, ExecResult } from "./types.js";

export interface SimpleBoxOptions extends BoxOptions {
  /** Runtime to use (default: `Boxlite.default()`, a private local server). */
  runtime?: Boxlite;
  /** Talk to the server at this URL instead (a runtime owned by this box). */
  url?: string;
  apiKey?: string;
  name?: string;
  reuseExisting?: boolean;
}

export interface SimpleExecOptions {
  env?: Record<string, string>;
  user?: string;
  /** Seconds; the command is killed and `TimeoutError` is thrown. */
  timeout?: number;
  cwd?: string;
}

const NOT_CREATED = "Box not yet created. Call exec() first, or use getId()/getInfo() or 'await box.start()'.";

function quote(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'"'"'`)}'`)).join(" ");
}

export class SimpleBox {
  private readonly options: SimpleBoxOptions;
  private runtime?: Boxlite;
  private ownsRuntime = false;
  private handle?: Box;
  private pending?: Promise<Box>;
  private wasCreated?: boolean;

  constructor(options: SimpleBoxOptions) {
    if (!options.image && !options.rootfsPath) throw new ConfigError("SimpleBox needs image or rootfsPath");
    this.options = { autoRemove: true, ...options };
  }

  /** The box, created (or reused) and started on the first call; concurrent first calls share
   * one creation, and a failed one is tried again by the next call. */
  private ensureBox(): Promise<Box> {
    if (this.handle) return Promise.resolve(this.handle);
    this.pending ??= this.createBox().then(
      (box) => (this.handle = box),
      (err: unknown) => {
        this.pending = undefined;
        throw err;
      },
    );
    return this.pending;
  }

  private async createBox(): Promise<Box> {
    const { runtime, url, apiKey, name, reuseExisting, ...boxOptions } = this.options;
    if (!this.runtime) {
      if (runtime) this.runtime = runtime;
      else if (url) [this.runtime, this.ownsRuntime] = [Boxlite.rest(url, apiKey), true];
      else this.runtime = await Boxlite.default();
    }
    let box: Box;
    if (reuseExisting) [box, this.wasCreated] = await this.runtime.getOrCreate(boxOptions, name);
    else [box, this.wasCreated] = [await this.runtime.create(boxOptions, name), true];
    await box.start();
    return box;
  }

  /** Create (or reuse) and start the box now rather than on first use; returns `this`. */
  async start(): Promise<this> {
    const wasThere = this.handle !== undefined;
    const box = await this.ensureBox();
    if (wasThere) await box.start(); // started again after a stop()
    return this;
  }

  async stop(): Promise<void> {
    const box = this.handle ?? (await this.pending?.catch(() => undefined));
    try {
      await box?.stop();
    } catch {
      // already gone
    }
    if (this.ownsRuntime) await this.runtime?.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** The box handle; throws `InvalidStateError` before the box exists (see `getId`). */
  get box(): Box {
    if (!this.handle) throw new InvalidStateError(NOT_CREATED);
    return this.handle;
  }

  get id(): string {
    return this.box.id;
  }

  /** The box's id, creating the box if needed. */
  async getId(): Promise<string> {
    return (await this.ensureBox()).id;
  }

  get name(): string | null {
    return this.handle?.name ?? this.options.name ?? null;
  }

  /** Whether the box was created by this object (false: an existing one reused); undefined before. */
  get created(): boolean | undefined {
    return this.wasCreated;
  }

  /** The box's information, creating the box if needed. */
  async getInfo(): Promise<BoxInfo> {
    return (await this.ensureBox()).info();
  }

  async info(): Promise<BoxInfo> {
    return this.box.info();
  }

  async metrics(): Promise<BoxMetrics> {
    return (await this.ensureBox()).metrics();
  }

  /**
   * Run a command to completion: `exec("sh", "-c", "echo hi")`, optionally with a trailing
   * options object. Never throws for a non-zero exit; throws `TimeoutError` on timeout.
   */
  async exec(cmd: string, ...rest: Array<string | SimpleExecOptions>): Promise<ExecResult> {
    const last = rest.at(-1);
    const opts: SimpleExecOptions = typeof last === "object" ? (rest.pop() as SimpleExecOptions) : {};
    const args = rest as string[];
    const box = await this.ensureBox();
    const execution = await box.exec(cmd, args, {
      env: opts.env, user: opts.user, timeoutSecs: opts.timeout, cwd: opts.cwd, stdin: false,
    });
    const [stdout, stderr] = await Promise.all([execution.stdout().read(), execution.stderr().read()]);
    const status = await execution.wait();
    if (status.timedOut) {
      throw new TimeoutError(`Command '${quote([cmd, ...args])}' timed out after ${opts.timeout} seconds`);
    }
    return { exitCode: status.exitCode, stdout, stderr, timedOut: status.timedOut, errorMessage: status.errorMessage };
  }

  async copyIn(hostPath: string, containerDest: string, opts?: CopyOptions): Promise<void> {
    return (await this.ensureBox()).copyIn(hostPath, containerDest, opts);
  }

  async copyOut(containerSrc: string, hostDest: string, opts?: CopyOptions): Promise<void> {
    return (await this.ensureBox()).copyOut(containerSrc, hostDest, opts);
  }
}
