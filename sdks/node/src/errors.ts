/** Typed errors; `type` is the Python error class name the server reported. */

export class BoxliteError extends Error {
  readonly type: string;
  readonly details: Record<string, unknown>;

  constructor(message: string, type?: string, details: Record<string, unknown> = {}) {
    super(message);
    this.type = type ?? new.target.name;
    this.name = this.type;
    this.details = details;
  }
}

export class ConfigError extends BoxliteError {}
export class UnsupportedOptionError extends BoxliteError {}
export class NotFoundError extends BoxliteError {}
export class AlreadyExistsError extends BoxliteError {}
export class InvalidStateError extends BoxliteError {}
export class ExecError extends BoxliteError {
  get command(): string | undefined {
    return this.details.command as string | undefined;
  }
  get exitCode(): number | undefined {
    return this.details.exit_code as number | undefined;
  }
  get stderr(): string | undefined {
    return this.details.stderr as string | undefined;
  }
}
export class TimeoutError extends BoxliteError {}
export class StoppedError extends BoxliteError {}
export class EngineError extends BoxliteError {}
export class BoxDiedError extends EngineError {}
export class ImageError extends BoxliteError {}
export class RegistryError extends ImageError {}
/** The server refused the API key (HTTP 401). */
export class UnauthorizedError extends BoxliteError {}
/** The server does not allow this caller to do it (HTTP 403), e.g. naming an unlisted host path. */
export class PermissionDeniedError extends BoxliteError {}
/** A limit was reached: a request or an answer too large, too many of something. */
export class ResourceExhaustedError extends BoxliteError {}
/** An archive from a box would write outside its destination or destroy a host directory. */
export class UnsafeArchiveError extends BoxliteError {}

type ErrorClass = new (message: string, type?: string, details?: Record<string, unknown>) => BoxliteError;

const CLASSES: Record<string, ErrorClass> = {
  ConfigError, ParseError: ConfigError, UnsupportedOptionError, NotFoundError, ImageNotFoundError: NotFoundError,
  AlreadyExistsError, InvalidStateError, ExecError, TimeoutError, StoppedError, EngineError, BoxDiedError,
  ImageError, RegistryError, AuthenticationError: RegistryError, DigestMismatchError: ImageError,
  UnsafeLayerError: ImageError, PermissionDeniedError, ResourceExhaustedError, RequestTooLargeError: ResourceExhaustedError,
  ImageTooLargeError: ResourceExhaustedError, UnsafeArchiveError,
};

/** The typed error for a server error body `{"error": {"type", "message", ...}}`. */
export function errorFromBody(body: unknown, status?: number): BoxliteError {
  const err = (body as { error?: Record<string, unknown> } | null)?.error;
  if (status === 401) {
    return new UnauthorizedError(String(err?.message ?? "missing or wrong API key"), "UnauthorizedError");
  }
  if (!err || typeof err !== "object") {
    return new BoxliteError(`server error ${status ?? ""}: ${JSON.stringify(body)}`);
  }
  const type = String(err.type ?? "BoxliteError");
  const cls = CLASSES[type] ?? BoxliteError;
  const { type: _t, message, ...details } = err;
  return new cls(String(message ?? ""), type, details);
}
