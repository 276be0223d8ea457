// Task workers: serve methods to an executor over stellwerk.execution.v1.WorkerService.
import { credentials, type ChannelCredentials, type ClientDuplexStream } from "@grpc/grpc-js";

import {
  WorkerServiceClient,
  type ConnectRequest,
  type ConnectResponse,
  type WorkerTask,
} from "./gen/stellwerk/execution/v1/worker_service.js";
import { FailedPreconditionError, fromServiceError, InvalidArgumentError } from "./errors.js";

/** An executor's default address; `STELLWERK_EXECUTOR_ADDRESS` overrides it. */
export const DEFAULT_EXECUTOR_ADDRESS = "127.0.0.1:50052";
export const SDK = "stellwerk-typescript/0.1.0";

export function defaultExecutorAddress(): string {
  return process.env.STELLWERK_EXECUTOR_ADDRESS || DEFAULT_EXECUTOR_ADDRESS;
}

/** One attempt of one task, as a handler receives it. */
export interface Task<P = Record<string, unknown>> {
  runId: string;
  taskId: string;
  method: string;
  /** Counts from 1. */
  attempt: number;
  /** Stable for this attempt whatever crashes happen: pass it on to your own side effects. */
  idempotencyKey: string;
  /** The parameters, references already substituted. */
  params: P;
  /** Aborted when the executor gives the attempt up (claim lapsed, timeout) or the worker stops. */
  signal: AbortSignal;
}

/** Runs one attempt; its (JSON-serialisable) return value is the result, a throw fails it. */
export type Handler<P = any> = (task: Task<P>) => unknown | Promise<unknown>;

export interface WorkerOptions {
  /** Name in logs and registrations (default: the executor makes one). */
  workerId?: string;
  /** Attempts run at once (default 1). */
  concurrency?: number;
  credentials?: ChannelCredentials;
  /** Where progress is reported (default console.error); `null` to stay silent. */
  log?: ((message: string) => void) | null;
}

/**
 * Serves methods to one executor. Handlers must not block the event loop for long: heartbeats
 * run on it, and a worker silent for a lease loses its attempts to other workers.
 */
export class Worker {
  private readonly handlers = new Map<string, Handler>();
  private readonly client: WorkerServiceClient;
  private readonly log: (message: string) => void;
  private stopping = new AbortController();

  constructor(
    address: string = defaultExecutorAddress(),
    private readonly options: WorkerOptions = {},
  ) {
    this.client = new WorkerServiceClient(address, options.credentials ?? credentials.createInsecure());
    this.log = options.log === null ? () => {} : (options.log ?? ((m) => console.error(m)));
  }

  /** Serve `method` (e.g. "shop/charge") with `fn`; before `run`. */
  registerHandler<P = any>(method: string, fn: Handler<P>): this {
    if (this.handlers.has(method)) throw new Error(`handler for ${method} registered twice`);
    this.handlers.set(method, fn as Handler);
    return this;
  }

  /**
   * Serve until `stop()` (or `signal`): connect, register, run attempts, reconnect with backoff
   * when the stream breaks. Rejects only when the executor refuses the registration
   * (InvalidArgumentError, FailedPreconditionError), which retrying cannot fix.
   */
  async run(signal?: AbortSignal): Promise<void> {
    if (this.handlers.size === 0) throw new Error("no handlers registered");
    signal?.addEventListener("abort", () => this.stop(), { once: true });
    let pause = 100;
    try {
      while (!this.stopping.signal.aborted) {
        let registered = false;
        try {
          registered = await this.session(() => (registered = true));
        } catch (err) {
          if (err instanceof InvalidArgumentError || err instanceof FailedPreconditionError) throw err;
          if (this.stopping.signal.aborted) break;
          this.log(`stellwerk worker: session ended (${(err as Error).message}); reconnecting in ${pause} ms`);
        }
        if (registered) pause = 100;
        await sleep(pause, this.stopping.signal);
        pause = Math.min(pause * 2, 5000);
      }
    } finally {
      this.client.close();
    }
  }

  /** Stop serving: the session ends, attempts in progress are given back to the executor. */
  stop(): void {
    this.stopping.abort();
  }

  private session(onRegistered: () => void): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const call: ClientDuplexStream<ConnectRequest, ConnectResponse> = this.client.connect();
      const running = new Map<string, AbortController>();
      let heartbeat: NodeJS.Timeout | undefined;
      let registered = false;
      const end = () => {
        clearInterval(heartbeat);
        for (const controller of running.values()) controller.abort();
        this.stopping.signal.removeEventListener("abort", cancel);
      };
      const cancel = () => call.cancel();
      this.stopping.signal.addEventListener("abort", cancel, { once: true });
      const send = (message: ConnectRequest) => {
        if (!call.writableEnded && !call.destroyed) call.write(message);
      };

      call.on("data", (response: ConnectResponse) => {
        const message = response.message;
        if (message?.$case === "registered") {
          registered = true;
          onRegistered();
          const reg = message.value;
          const every = reg.heartbeatInterval ? reg.heartbeatInterval.seconds * 1000 + reg.heartbeatInterval.nanos / 1e6 : 1000;
          heartbeat = setInterval(() => send({ message: { $case: "heartbeat", value: {} } }), Math.max(50, every));
          this.log(`stellwerk worker: registered with executor ${reg.executorId} as ${reg.workerId}: ${[...this.handlers.keys()].join(", ")}`);
        } else if (message?.$case === "task") {
          const controller = new AbortController();
          running.set(message.value.taskToken, controller);
          void this.execute(message.value, controller.signal).then((answer) => {
            running.delete(message.value.taskToken);
            if (!controller.signal.aborted) send(answer);
          });
        } else if (message?.$case === "cancellation") {
          running.get(message.value.taskToken)?.abort();
        }
      });
      call.on("error", (err) => {
        end();
        if (this.stopping.signal.aborted) resolve(registered);
        else reject(fromServiceError(err));
      });
      call.on("end", () => {
        end();
        resolve(registered);
      });

      send({
        message: {
          $case: "register",
          value: {
            workerId: this.options.workerId ?? "",
            methods: [...this.handlers.keys()],
            concurrency: this.options.concurrency ?? 1,
            sdk: SDK,
          },
        },
      });
    });
  }

  private async execute(task: WorkerTask, signal: AbortSignal): Promise<ConnectRequest> {
    const token = task.taskToken;
    const fail = (message: string): ConnectRequest => ({ message: { $case: "failure", value: { taskToken: token, message } } });
    const handler = this.handlers.get(task.method);
    if (!handler) return fail(`this worker has no handler for ${task.method}`);
    let timer: NodeJS.Timeout | undefined;
    let taskSignal = signal;
    if (task.timeout) {
      const limited = new AbortController();
      signal.addEventListener("abort", () => limited.abort(), { once: true });
      timer = setTimeout(() => limited.abort(), task.timeout.seconds * 1000 + task.timeout.nanos / 1e6);
      taskSignal = limited.signal;
    }
    try {
      const output = await handler({
        runId: task.runId,
        taskId: task.taskId,
        method: task.method,
        attempt: task.attempt,
        idempotencyKey: task.idempotencyKey,
        params: JSON.parse(task.paramsJson || "{}"),
        signal: taskSignal,
      });
      const resultJson = JSON.stringify(output ?? null);
      return { message: { $case: "result", value: { taskToken: token, resultJson } } };
    } catch (err) {
      return fail(err instanceof Error ? err.message : String(err));
    } finally {
      clearTimeout(timer);
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}
