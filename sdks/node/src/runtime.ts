/** `Boxlite`: the runtime object (a private local server, or a server at a URL). */

import { StringDecoder } from "node:string_decoder";
import { Box } from "./box.js";
import { BoxliteError, errorFromBody, NotFoundError, ResourceExhaustedError } from "./errors.js";
import { LocalServer, type LocalServerOptions } from "./server.js";
import { MAX_LINE, Transport } from "./transport.js";
import {
  type BoxInfo,
  type BoxOptions,
  boxInfo,
  camelize,
  type ImageInfo,
  optionsJson,
  type PullProgress,
  type RuntimeMetrics,
} from "./types.js";

/** `runtime.images`: pull, list, remove and garbage-collect images of the server. */
export class Images {
  constructor(private readonly transport: Transport) {}

  /** Pull into the server's store; `progress` receives throttled per-layer updates. */
  async pull(reference: string, progress?: (p: PullProgress) => void): Promise<ImageInfo> {
    if (!progress) {
      return camelize<ImageInfo>(await this.transport.json("POST", "/v1/images/pull", { json: { reference } }));
    }
    const res = await this.transport.stream("POST", "/v1/images/pull", { json: { reference }, query: { progress: true } });
    let buffered = "";
    const text = new StringDecoder("utf8"); // a character split between chunks stays whole
    for await (const chunk of res) {
      buffered += text.write(chunk as Buffer);
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).trim();
        buffered = buffered.slice(nl + 1);
        if (!line) continue;
        const event = JSON.parse(line) as Record<string, Record<string, unknown>>;
        if (event.progress) progress(camelize<PullProgress>(event.progress));
        else if (event.image) return camelize<ImageInfo>(event.image);
        else throw errorFromBody(event);
      }
      if (buffered.length > MAX_LINE) {
        res.destroy();
        throw new ResourceExhaustedError(`${this.transport.url} sent a progress line longer than ${MAX_LINE} characters`);
      }
    }
    throw new BoxliteError(`the server ended the pull of ${reference} without a result`);
  }

  async list(): Promise<ImageInfo[]> {
    const raw = await this.transport.json<Record<string, unknown>[]>("GET", "/v1/images");
    return raw.map((i) => camelize<ImageInfo>(i));
  }

  async remove(reference: string, force = false): Promise<void> {
    await this.transport.json("DELETE", `/v1/images/${reference}`, { query: { force } });
  }

  async gc(): Promise<number> {
    return (await this.transport.json<{ removed: number }>("POST", "/v1/images/gc")).removed;
  }
}

let defaultRuntime: Promise<Boxlite> | null = null;

export class Boxlite {
  /** Boxes this client started (stopped by `shutdown`, unless detached). */
  readonly owned = new Set<string>();
  readonly images: Images;

  private constructor(
    readonly transport: Transport,
    private readonly server?: LocalServer,
  ) {
    this.images = new Images(transport);
  }

  /** A runtime talking to a `boxlite serve` at `url` (`unix:///path.sock` or `http(s)://host:port`). */
  static rest(url: string, apiKey?: string): Boxlite {
    return new Boxlite(new Transport(url, apiKey));
  }

  /** A runtime backed by a private local server on a unix socket (gone when this process exits). */
  static async local(opts: LocalServerOptions = {}): Promise<Boxlite> {
    const server = await LocalServer.start(opts);
    return new Boxlite(new Transport(server.url), server);
  }

  /** The process-wide runtime: `$BOXLITE_URL` (+ `$BOXLITE_API_KEY`) if set, else a private local server. */
  static default(): Promise<Boxlite> {
    if (defaultRuntime === null) {
      const url = process.env.BOXLITE_URL;
      defaultRuntime = url ? Promise.resolve(Boxlite.rest(url, process.env.BOXLITE_API_KEY)) : Boxlite.local();
      defaultRuntime.catch(() => (defaultRuntime = null));
    }
    return defaultRuntime;
  }

  get url(): string {
    return this.transport.url;
  }

  /** Process id of the private server, if this runtime started one. */
  get serverPid(): number | undefined {
    return this.server?.pid;
  }

  async create(options: BoxOptions, name?: string): Promise<Box> {
    const body = { options: optionsJson(options), name: name ?? null };
    return new Box(this, boxInfo(await this.transport.json("POST", "/v1/boxes", { json: body })));
  }

  async get(idOrName: string): Promise<Box | null> {
    const info = await this.getInfo(idOrName);
    return info === null ? null : new Box(this, info);
  }

  async getOrCreate(options: BoxOptions, name?: string): Promise<[Box, boolean]> {
    if (name !== undefined) {
      const box = await this.get(name);
      if (box !== null) return [box, false];
    }
    return [await this.create(options, name), true];
  }

  async getInfo(idOrName: string): Promise<BoxInfo | null> {
    try {
      return boxInfo(await this.transport.json("GET", `/v1/boxes/${encodeURIComponent(idOrName)}`));
    } catch (e) {
      if (e instanceof NotFoundError) return null;
      throw e;
    }
  }

  async listInfo(state?: string): Promise<BoxInfo[]> {
    const raw = await this.transport.json<Record<string, unknown>[]>("GET", "/v1/boxes", { query: { state } });
    return raw.map(boxInfo);
  }

  async remove(idOrName: string, force = false): Promise<void> {
    await this.transport.json("DELETE", `/v1/boxes/${encodeURIComponent(idOrName)}`, { query: { force } });
  }

  async metrics(): Promise<RuntimeMetrics> {
    return camelize<RuntimeMetrics>(await this.transport.json("GET", "/v1/metrics"));
  }

  /** Stop the non-detached boxes this client started; stop the private server if there is one. */
  async shutdown(timeout?: number): Promise<void> {
    if (this.transport.closed) return;
    await Promise.allSettled(
      [...this.owned].map((id) => this.transport.json("POST", `/v1/boxes/${id}/stop`, { query: { timeout } })),
    );
    this.owned.clear();
    this.transport.closed = true;
    await this.server?.close();
  }

  close(): Promise<void> {
    return this.shutdown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.shutdown();
  }
}
