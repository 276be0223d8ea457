// A typed, promise-based client of the resolver (stellwerk.workflow.v1.WorkflowService).
import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import { extname } from "node:path";
import { credentials, Metadata, type ChannelCredentials, type ClientOptions, type ServiceError } from "@grpc/grpc-js";

import { RunState, RunView, type Run, type TaskRun } from "./gen/stellwerk/workflow/v1/workflow.js";
import {
  WorkflowServiceClient,
  type CancelRunResponse,
  type GetRunResponse,
  type ListRunsResponse,
  type RetryRunResponse,
  type StartRunResponse,
  type ValidateWorkflowResponse,
} from "./gen/stellwerk/workflow/v1/workflow_service.js";

/** `validate`'s answer: every problem found (`problems`, none: valid) and `taskCount`. */
export type Validation = ValidateWorkflowResponse;
export type { ValidationProblem } from "./gen/stellwerk/workflow/v1/workflow.js";
import { fromServiceError, UnavailableError } from "./errors.js";

/** The resolver's default address; `STELLWERK_ADDRESS` overrides it in `defaultAddress()`. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";
/** Deadline of a unary call that sets none (ms). */
export const DEFAULT_TIMEOUT_MS = 30_000;
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

/** `STELLWERK_ADDRESS`, or the default. */
export function defaultAddress(): string {
  return process.env.STELLWERK_ADDRESS || DEFAULT_ADDRESS;
}

export interface ConnectOptions {
  /** Default plaintext. */
  credentials?: ChannelCredentials;
  /** Deadline of calls without their own `timeoutMs` (default 30 s). */
  timeoutMs?: number;
  /** Extra @grpc/grpc-js channel options. */
  channelOptions?: ClientOptions;
}

export interface CallOptions {
  /** Deadline of this call in ms (default: the client's). */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
}

export interface SubmitOptions extends CallOptions {
  /** Idempotency key: a retry with the same id returns the same run. A random one by default. */
  requestId?: string;
  /** Accept methods no executor (or worker) has registered yet. */
  allowUnregistered?: boolean;
  /** "yaml", "json" or undefined (detect). */
  format?: "yaml" | "json";
}

/** One change of a watched run: the run (without tasks), and the task that changed if one did. */
export interface Update {
  run: Run;
  task?: TaskRun;
}

export class StellwerkClient {
  /** The generated client, for calls this class does not wrap. */
  readonly workflows: WorkflowServiceClient;
  private readonly timeoutMs: number;

  constructor(address: string = defaultAddress(), options: ConnectOptions = {}) {
    this.workflows = new WorkflowServiceClient(address, options.credentials ?? credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
      ...options.channelOptions,
    });
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Close the channel. */
  close(): void {
    this.workflows.close();
  }

  /** Start a run of a workflow given as a document (Gleitzeit YAML or JSON text). */
  async submit(document: string, options: SubmitOptions = {}): Promise<Run> {
    const reply = await this.unary<StartRunResponse>(
      (cb, deadline) =>
        this.workflows.startRun(
          {
            source: { $case: "document", value: document },
            documentFormat: options.format ?? "",
            requestId: options.requestId ?? randomBytes(16).toString("hex"),
            allowUnregisteredMethods: options.allowUnregistered ?? false,
          },
          new Metadata(),
          { deadline },
          cb,
        ),
      options,
    );
    return reply.run!;
  }

  /** Start a run of the workflow file at `path` (.yaml, .yml or .json). */
  async submitFile(path: string, options: SubmitOptions = {}): Promise<Run> {
    const ext = extname(path).toLowerCase();
    const format = options.format ?? (ext === ".json" ? "json" : ext === ".yaml" || ext === ".yml" ? "yaml" : undefined);
    return this.submit(await readFile(path, "utf8"), { ...options, format });
  }

  /** A run with its tasks. */
  async get(runId: string, options: CallOptions = {}): Promise<Run> {
    const reply = await this.unary<GetRunResponse>(
      (cb, deadline) =>
        this.workflows.getRun({ runId, view: RunView.RUN_VIEW_FULL }, new Metadata(), { deadline }, cb),
      options,
    );
    return reply.run!;
  }

  /**
   * Check a workflow document (YAML or JSON text) without running it: every problem found
   * (none: valid). An invalid workflow is an answer here, not an error.
   */
  async validate(
    document: string,
    options: CallOptions & { format?: "yaml" | "json"; allowUnregistered?: boolean } = {},
  ): Promise<Validation> {
    return this.unary<ValidateWorkflowResponse>(
      (cb, deadline) =>
        this.workflows.validateWorkflow(
          {
            source: { $case: "document", value: document },
            documentFormat: options.format ?? "",
            allowUnregisteredMethods: options.allowUnregistered ?? false,
          },
          new Metadata(),
          { deadline },
          cb,
        ),
      options,
    );
  }

  /**
   * Runs newest first, without their tasks, fetching pages as the iteration goes (each page
   * with its own deadline); `state` filters (default: any state).
   */
  async *list(options: CallOptions & { state?: RunState; pageSize?: number } = {}): AsyncGenerator<Run> {
    let pageToken = "";
    do {
      const page: ListRunsResponse = await this.unary<ListRunsResponse>(
        (cb, deadline) =>
          this.workflows.listRuns(
            { state: options.state ?? RunState.RUN_STATE_UNSPECIFIED, pageSize: options.pageSize ?? 0, pageToken },
            new Metadata(),
            { deadline },
            cb,
          ),
        options,
      );
      yield* page.runs;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /**
   * Cancel a running run (idempotent); returns it, CANCELLED. A run that ended COMPLETED or
   * FAILED (or is COMPENSATING/COMPENSATED) is refused: `FailedPreconditionError`.
   */
  async cancel(runId: string, options: CallOptions & { requestId?: string } = {}): Promise<Run> {
    const reply = await this.unary<CancelRunResponse>(
      (cb, deadline) =>
        this.workflows.cancelRun(
          { runId, requestId: options.requestId ?? randomBytes(16).toString("hex") },
          new Metadata(),
          { deadline },
          cb,
        ),
      options,
    );
    return reply.run!;
  }

  /**
   * Re-run an ended run's unfinished part, and `fromTasks` with everything downstream; returns
   * the run, RUNNING again, `restarts` counted up. Running, COMPENSATING and COMPENSATED runs
   * are refused: `FailedPreconditionError`.
   */
  async retry(
    runId: string,
    options: CallOptions & { fromTasks?: string[]; requestId?: string } = {},
  ): Promise<Run> {
    const reply = await this.unary<RetryRunResponse>(
      (cb, deadline) =>
        this.workflows.retryRun(
          {
            runId,
            fromTaskIds: options.fromTasks ?? [],
            requestId: options.requestId ?? randomBytes(16).toString("hex"),
          },
          new Metadata(),
          { deadline },
          cb,
        ),
      options,
    );
    return reply.run!;
  }

  /**
   * A run's changes until it ends (see `ended`): first its current state, then one update per change.
   * A broken stream (UNAVAILABLE) is reopened, so updates may repeat but the watch never ends
   * early. Stop early with `break` or `signal`.
   */
  async *watch(runId: string, options: { signal?: AbortSignal } = {}): AsyncGenerator<Update> {
    let pause = 200;
    for (;;) {
      const call = this.workflows.watchRun({ runId });
      const abort = () => call.cancel();
      options.signal?.addEventListener("abort", abort, { once: true });
      try {
        for await (const message of call) {
          pause = 200;
          yield { run: message.run, task: message.task };
        }
        return; // the run ended
      } catch (err) {
        const typed = fromServiceError(err);
        if (!(typed instanceof UnavailableError) || options.signal?.aborted) throw typed;
      } finally {
        options.signal?.removeEventListener("abort", abort);
        call.cancel();
      }
      await new Promise((resolve) => setTimeout(resolve, pause));
      pause = Math.min(pause * 2, 5000);
    }
  }

  /** Follow a run until it ends; returns it with its tasks. */
  async wait(runId: string, options: { signal?: AbortSignal } = {}): Promise<Run> {
    for await (const _ of this.watch(runId, options)) {
      // each change; only the end matters here
    }
    return this.get(runId, options);
  }

  private unary<T>(
    start: (cb: (err: ServiceError | null, reply: T) => void, deadline: Date) => { cancel(): void },
    options: CallOptions,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const deadline = new Date(Date.now() + (options.timeoutMs ?? this.timeoutMs));
      const call = start((err, reply) => {
        options.signal?.removeEventListener("abort", abort);
        if (err) reject(fromServiceError(err));
        else resolve(reply);
      }, deadline);
      const abort = () => call.cancel();
      if (options.signal?.aborted) call.cancel();
      else options.signal?.addEventListener("abort", abort, { once: true });
    });
  }
}
