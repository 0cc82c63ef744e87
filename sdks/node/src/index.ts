/**
 * BoxLite for Node.js.
 *
 *     await using box = await new SimpleBox({ rootfsPath: "/srv/rootfs" }).start();
 *     const { exitCode, stdout } = await box.exec("echo", "hello");
 *
 * Without a URL a private `boxlite serve` is started on a unix socket (Python `boxlite`
 * package needed); `Boxlite.rest(url, apiKey)` or `{ url }` talks to a running server.
 */

export { Box } from "./box.js";
export * from "./errors.js";
export { Channel, ExecStdin, ExecStream, Execution, type ExecStatus, OutputStream } from "./execution.js";
export { Boxlite, Images } from "./runtime.js";
export { LocalServer, type LocalServerOptions } from "./server.js";
export { SimpleBox, type SimpleBoxOptions, type SimpleExecOptions } from "./simplebox.js";
export type * from "./types.js";
