/** `SimpleBox`: create + start on `start()`, run commands to completion, stop on dispose. */

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

const NOT_STARTED = "Box not started. Use 'await using box = await new SimpleBox(...).start()' or call 'await box.start()' first.";

function quote(argv: string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'"'"'`)}'`)).join(" ");
}

export class SimpleBox {
  private readonly options: SimpleBoxOptions;
  private runtime?: Boxlite;
  private ownsRuntime = false;
  private handle?: Box;
  private wasCreated?: boolean;

  constructor(options: SimpleBoxOptions) {
    if (!options.image && !options.rootfsPath) throw new ConfigError("SimpleBox needs image or rootfsPath");
    this.options = { autoRemove: true, ...options };
  }

  /** Create (or reuse) and start the box; returns `this`. */
  async start(): Promise<this> {
    if (!this.handle) {
      const { runtime, url, apiKey, name, reuseExisting, ...boxOptions } = this.options;
      if (runtime) this.runtime = runtime;
      else if (url) [this.runtime, this.ownsRuntime] = [Boxlite.rest(url, apiKey), true];
      else this.runtime = await Boxlite.default();
      if (reuseExisting) [this.handle, this.wasCreated] = await this.runtime.getOrCreate(boxOptions, name);
      else [this.handle, this.wasCreated] = [await this.runtime.create(boxOptions, name), true];
    }
    await this.handle.start();
    return this;
  }

  async stop(): Promise<void> {
    try {
      await this.handle?.stop();
    } catch {
      // already gone
    }
    if (this.ownsRuntime) await this.runtime?.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  get box(): Box {
    if (!this.handle) throw new InvalidStateError(NOT_STARTED);
    return this.handle;
  }

  get id(): string {
    return this.box.id;
  }

  get name(): string | null {
    return this.box.name;
  }

  get created(): boolean | undefined {
    return this.wasCreated;
  }

  info(): Promise<BoxInfo> {
    return this.box.info();
  }

  metrics(): Promise<BoxMetrics> {
    return this.box.metrics();
  }

  /**
   * Run a command to completion: `exec("sh", "-c", "echo hi")`, optionally with a trailing
   * options object. Never throws for a non-zero exit; throws `TimeoutError` on timeout.
   */
  async exec(cmd: string, ...rest: Array<string | SimpleExecOptions>): Promise<ExecResult> {
    const last = rest.at(-1);
    const opts: SimpleExecOptions = typeof last === "object" ? (rest.pop() as SimpleExecOptions) : {};
    const args = rest as string[];
    const execution = await this.box.exec(cmd, args, {
      env: opts.env, user: opts.user, timeoutSecs: opts.timeout, cwd: opts.cwd, stdin: false,
    });
    const [stdout, stderr] = await Promise.all([execution.stdout().read(), execution.stderr().read()]);
    const status = await execution.wait();
    if (status.timedOut) {
      throw new TimeoutError(`Command '${quote([cmd, ...args])}' timed out after ${opts.timeout} seconds`);
    }
    return { exitCode: status.exitCode, stdout, stderr, timedOut: status.timedOut, errorMessage: status.errorMessage };
  }

  copyIn(hostPath: string, containerDest: string, opts?: CopyOptions): Promise<void> {
    return this.box.copyIn(hostPath, containerDest, opts);
  }

  copyOut(containerSrc: string, hostDest: string, opts?: CopyOptions): Promise<void> {
    return this.box.copyOut(containerSrc, hostDest, opts);
  }
}
