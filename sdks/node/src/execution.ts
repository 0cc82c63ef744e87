/** One command running in a box, over the exec WebSocket (see docs/rest.md). */

import { constants } from "node:os";
import type WebSocket from "ws";
import { BoxliteError, ConfigError, errorFromBody, InvalidStateError } from "./errors.js";
import type { Transport } from "./transport.js";

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const MAX_FRAME = 64 * 1024;
/** The agent protocol's largest frame (agent/protocol.py MAX_PAYLOAD): an exec request must fit in one. */
const MAX_PAYLOAD = 1 << 20;
const WINDOW = 1 << 20;

export interface ExecStatus {
  exitCode: number;
  signal: number | null;
  timedOut: boolean;
  errorMessage: string | null;
  durationMs: number | null;
}

const SIGNAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n as number, name]));

function statusFrom(m: Record<string, unknown>): ExecStatus {
  const signal = (m.signal as number | null) ?? null;
  const timedOut = Boolean(m.timed_out);
  let errorMessage = (m.error_message as string | null) ?? null;
  if (timedOut) errorMessage = "timed out";
  else if (signal) errorMessage = `killed by signal ${signal} (${SIGNAMES.get(signal) ?? `signal ${signal}`})`;
  return { exitCode: Number(m.exit_code), signal, timedOut, errorMessage, durationMs: (m.duration_ms as number) ?? null };
}

/** Chunks of one output stream; reading a chunk grants the server that much credit. */
export class OutputStream {
  private chunks: Buffer[] = [];
  private ended = false;
  private wake: (() => void) | null = null;
  total = 0;

  constructor(private readonly channel: Channel, private readonly name: "stdout" | "stderr") {}

  feed(data: Buffer | null): void {
    if (data === null) this.ended = true;
    else if (data.length) {
      this.chunks.push(data);
      this.total += data.length;
    }
    this.wake?.();
    this.wake = null;
  }

  get eof(): boolean {
    return this.ended;
  }

  /** The next chunk, or null at end of stream. */
  async read(): Promise<Buffer | null> {
    while (!this.chunks.length) {
      if (this.ended) return null;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    const data = this.chunks.shift()!;
    this.channel.send({ type: "credit", stream: this.name, bytes: data.length });
    return data;
  }
}

/** Async iterable of `string` chunks (UTF-8, characters never split); `bytes()` iterates raw. */
export class ExecStream implements AsyncIterable<string> {
  constructor(private readonly out: OutputStream) {}

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    const decoder = new TextDecoder("utf-8");
    for (;;) {
      const chunk = await this.out.read();
      if (chunk === null) {
        const tail = decoder.decode();
        if (tail) yield tail;
        return;
      }
      const text = decoder.decode(chunk, { stream: true });
      if (text) yield text;
    }
  }

  async *bytes(): AsyncGenerator<Buffer> {
    for (let c = await this.out.read(); c !== null; c = await this.out.read()) yield c;
  }

  /** The rest of the stream as one string. */
  async read(): Promise<string> {
    let text = "";
    for await (const part of this) text += part;
    return text;
  }

  async readBytes(): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of this.bytes()) parts.push(c);
    return Buffer.concat(parts);
  }
}

/** Writer for the process's standard input (flow-controlled). */
export class ExecStdin {
  constructor(private readonly channel: Channel) {}

  sendInput(data: string | Uint8Array): Promise<void> {
    return this.channel.writeStdin(typeof data === "string" ? Buffer.from(data) : Buffer.from(data));
  }

  write(data: string | Uint8Array): Promise<void> {
    return this.sendInput(data);
  }

  async close(): Promise<void> {
    this.channel.closeStdin();
  }

  get closed(): boolean {
    return this.channel.stdinClosed;
  }
}

/** Client end of `WS /v1/boxes/{id}/exec`. */
export class Channel {
  readonly stdout = new OutputStream(this, "stdout");
  readonly stderr = new OutputStream(this, "stderr");
  readonly exit: Promise<ExecStatus>;
  id = "";
  pid = 0;
  stdinClosed = false;
  private stdinCredit = 0;
  private stdinWake: (() => void) | null = null;
  private exited = false;
  private settle!: (s: ExecStatus) => void;
  private started!: { resolve: () => void; reject: (e: Error) => void };

  private constructor(private readonly ws: WebSocket) {
    this.exit = new Promise((resolve) => (this.settle = resolve));
    ws.on("message", (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on("close", () => this.onClose());
  }

  static async open(transport: Transport, boxId: string, start: Record<string, unknown>): Promise<Channel> {
    const message = JSON.stringify({ type: "start", window: WINDOW, ...start });
    const size = Buffer.byteLength(message);
    if (size > MAX_PAYLOAD) {
      // the box's agent takes no larger request: refused as the Python SDK does, before anything is sent
      throw new ConfigError(
        `box ${boxId}: the 'exec' request (its arguments and environment) is too large for the agent protocol: ` +
          `${size} bytes, more than ${MAX_PAYLOAD}`,
      );
    }
    const ws = await transport.websocket(`/v1/boxes/${encodeURIComponent(boxId)}/exec`);
    const ch = new Channel(ws);
    const ready = new Promise<void>((resolve, reject) => (ch.started = { resolve, reject }));
    ws.send(message);
    await ready;
    return ch;
  }

  send(msg: Record<string, unknown>): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(msg));
  }

  async writeStdin(data: Buffer): Promise<void> {
    if (this.stdinClosed) throw new InvalidStateError("stdin is closed");
    let offset = 0;
    while (offset < data.length) {
      while (this.stdinCredit <= 0) {
        if (this.exited || this.ws.readyState !== this.ws.OPEN) return;
        await new Promise<void>((resolve) => (this.stdinWake = resolve));
      }
      const n = Math.min(data.length - offset, this.stdinCredit, MAX_FRAME);
      this.stdinCredit -= n;
      const frame = Buffer.allocUnsafe(n + 1);
      frame[0] = STDIN;
      data.copy(frame, 1, offset, offset + n);
      await new Promise<void>((resolve, reject) => this.ws.send(frame, (e) => (e ? reject(e) : resolve())));
      offset += n;
    }
  }

  closeStdin(): void {
    if (!this.stdinClosed) {
      this.stdinClosed = true;
      this.send({ type: "close_stdin" });
    }
  }

  control(type: string, body: Record<string, unknown> = {}): void {
    if (!this.exited) this.send({ type, ...body });
  }

  /** Drop the connection (the server kills the command if it still runs). */
  close(): void {
    this.ws.close();
  }

  private wakeStdin(): void {
    this.stdinWake?.();
    this.stdinWake = null;
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      const stream = data[0] === STDOUT ? this.stdout : data[0] === STDERR ? this.stderr : null;
      if (stream && data.length > 1) stream.feed(data.subarray(1));
      return;
    }
    const m = JSON.parse(data.toString("utf8")) as Record<string, unknown>;
    switch (m.type) {
      case "started":
        this.id = String(m.id ?? "");
        this.pid = Number(m.pid ?? 0);
        this.stdinCredit = Number(m.stdin_window ?? 0);
        this.started.resolve();
        break;
      case "error":
        this.started.reject(errorFromBody(m));
        this.ws.close();
        break;
      case "eof":
        (m.stream === "stderr" ? this.stderr : this.stdout).feed(null);
        break;
      case "credit":
        this.stdinCredit += Number(m.bytes ?? 0);
        this.wakeStdin();
        break;
      case "exit":
        this.finish(statusFrom(m));
        break;
    }
  }

  private finish(status: ExecStatus): void {
    if (!this.exited) {
      this.exited = true;
      this.settle(status);
    }
    this.wakeStdin();
  }

  private onClose(): void {
    this.started?.reject(new BoxliteError("the server closed the exec connection"));
    this.finish({ exitCode: -1, signal: null, timedOut: false, errorMessage: "lost the connection to the server", durationMs: null });
    this.stdout.feed(null);
    this.stderr.feed(null);
  }
}

/** A command started with `Box.exec`. */
export class Execution {
  private taken = new Set<string>();

  constructor(readonly channel: Channel) {}

  get id(): string {
    return this.channel.id;
  }

  /** The process id inside the box. */
  get pid(): number {
    return this.channel.pid;
  }

  private take(what: string): void {
    if (this.taken.has(what)) throw new InvalidStateError(`${what} stream not available (it can be taken only once)`);
    this.taken.add(what);
  }

  stdout(): ExecStream {
    this.take("stdout");
    return new ExecStream(this.channel.stdout);
  }

  stderr(): ExecStream {
    this.take("stderr");
    return new ExecStream(this.channel.stderr);
  }

  stdin(): ExecStdin {
    this.take("stdin");
    return new ExecStdin(this.channel);
  }

  /** The exit status (exit code 128+N for signal N); may be awaited repeatedly. */
  wait(): Promise<ExecStatus> {
    return this.channel.exit;
  }

  /** SIGKILL the process group, or send `signal` to the process. */
  async kill(signal?: number | NodeJS.Signals): Promise<void> {
    const n = typeof signal === "string" ? constants.signals[signal] : signal;
    if (n === undefined || n === constants.signals.SIGKILL) this.channel.control("kill");
    else await this.signal(n);
  }

  async signal(signal: number | NodeJS.Signals): Promise<void> {
    const n = typeof signal === "string" ? constants.signals[signal] : signal;
    this.channel.control("signal", { signal: n });
  }

  async resizeTty(rows: number, cols: number): Promise<void> {
    this.channel.control("resize", { rows, cols });
  }
}
