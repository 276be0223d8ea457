// Errors from the server, typed: the gRPC code plus the google.rpc.Status details the server
// puts in `grpc-status-details-bin` (ErrorInfo reason and metadata, BadRequest violations).
import { Metadata, status as Status, type ServiceError } from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";

/** One problem of an INVALID_ARGUMENT error (google.rpc.BadRequest field violation). */
export interface Violation {
  field: string;
  description: string;
}

/** Base of every error a call to Stellwerk fails with. */
export class StellwerkError extends Error {
  /** The gRPC status code (`status.NOT_FOUND`, ...). */
  readonly code: Status;
  /** ErrorInfo.reason, e.g. `WORKFLOW_INVALID`; empty when the server sent none. */
  readonly reason: string;
  /** ErrorInfo.domain (`stellwerk.dev`). */
  readonly domain: string;
  /** ErrorInfo.metadata: the facts behind the message. */
  readonly metadata: Record<string, string>;
  /** BadRequest violations: every problem of an invalid request. */
  readonly violations: Violation[];

  constructor(
    message: string,
    code: Status,
    details: { reason?: string; domain?: string; metadata?: Record<string, string>; violations?: Violation[] } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
    this.reason = details.reason ?? "";
    this.domain = details.domain ?? "";
    this.metadata = details.metadata ?? {};
    this.violations = details.violations ?? [];
  }
}

/** INVALID_ARGUMENT: bad input; `violations` lists every problem. */
export class InvalidArgumentError extends StellwerkError {}
/** NOT_FOUND: no run (or other resource) of that id. */
export class NotFoundError extends StellwerkError {}
/** ALREADY_EXISTS. */
export class AlreadyExistsError extends StellwerkError {}
/** FAILED_PRECONDITION: the resource's state forbids the call. */
export class FailedPreconditionError extends StellwerkError {}
/** ABORTED: a conflicting write won; retrying may help. */
export class AbortedError extends StellwerkError {}
/** UNAVAILABLE: the server (or NATS behind it) cannot be reached now; retrying may help. */
export class UnavailableError extends StellwerkError {}
/** DEADLINE_EXCEEDED: the call's deadline passed. */
export class DeadlineExceededError extends UnavailableError {}
/** CANCELLED: the call was cancelled (an AbortSignal fired). */
export class CancelledError extends StellwerkError {}

const KINDS: Partial<Record<Status, typeof StellwerkError>> = {
  [Status.INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.NOT_FOUND]: NotFoundError,
  [Status.ALREADY_EXISTS]: AlreadyExistsError,
  [Status.FAILED_PRECONDITION]: FailedPreconditionError,
  [Status.ABORTED]: AbortedError,
  [Status.UNAVAILABLE]: UnavailableError,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [Status.CANCELLED]: CancelledError,
};

const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";
const BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest";

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/** Turn an error of a gRPC call into a typed StellwerkError (others are returned as they are). */
export function fromServiceError(err: unknown): unknown {
  if (!isServiceError(err)) return err;
  const details = err.metadata instanceof Metadata ? decodeDetails(err.metadata) : {};
  const Kind = KINDS[err.code as Status] ?? StellwerkError;
  return new Kind(err.details || err.message, err.code as Status, details, { cause: err });
}

/** Decode the google.rpc.Status in `grpc-status-details-bin` (hand-written: three messages). */
export function decodeDetails(metadata: Metadata): {
  reason?: string;
  domain?: string;
  metadata?: Record<string, string>;
  violations?: Violation[];
} {
  const raw = metadata.get("grpc-status-details-bin")[0];
  if (!(raw instanceof Buffer)) return {};
  const out: { reason?: string; domain?: string; metadata?: Record<string, string>; violations?: Violation[] } = {};
  try {
    for (const [field, value] of fields(raw)) {
      if (field !== 3) continue; // Status.details: repeated Any
      let typeUrl = "";
      let payload: Uint8Array = new Uint8Array();
      for (const [f, v] of fields(value as Uint8Array)) {
        if (f === 1) typeUrl = text(v);
        if (f === 2) payload = v as Uint8Array;
      }
      if (typeUrl === ERROR_INFO) {
        out.metadata = {};
        for (const [f, v] of fields(payload)) {
          if (f === 1) out.reason = text(v);
          if (f === 2) out.domain = text(v);
          if (f === 3) {
            let key = "";
            let val = "";
            for (const [kf, kv] of fields(v as Uint8Array)) {
              if (kf === 1) key = text(kv);
              if (kf === 2) val = text(kv);
            }
            out.metadata[key] = val;
          }
        }
      } else if (typeUrl === BAD_REQUEST) {
        out.violations = [];
        for (const [f, v] of fields(payload)) {
          if (f !== 1) continue;
          const violation: Violation = { field: "", description: "" };
          for (const [vf, vv] of fields(v as Uint8Array)) {
            if (vf === 1) violation.field = text(vv);
            if (vf === 2) violation.description = text(vv);
          }
          out.violations.push(violation);
        }
      }
    }
  } catch {
    return out; // undecodable details: keep what was read
  }
  return out;
}

function* fields(bytes: Uint8Array): Generator<[number, Uint8Array | number]> {
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (wireType === 2) yield [field, reader.bytes()];
    else if (wireType === 0) yield [field, Number(reader.uint64())];
    else reader.skip(wireType);
  }
}

function text(value: Uint8Array | number): string {
  return typeof value === "number" ? String(value) : new TextDecoder().decode(value);
}
