// Runs and tasks as the contract's messages (every field: restarts, breakers, role,
// resultSize, attemptHistory, retryTime, ...), with the helpers the Python client's typed
// results offer: the states that end a run or a task, results, durations.
import { RunState, TaskState, type Run, type TaskRun } from "./gen/stellwerk/workflow/v1/workflow.js";

export {
  BreakerState,
  RunState,
  TaskState,
  type Checkpoint,
  type CircuitBreaker,
  type Run,
  type TaskAttempt,
  type TaskRun,
} from "./gen/stellwerk/workflow/v1/workflow.js";

/** Task roles (`TaskRun.role`): a task that runs only on a failure path. */
export const Role = { NORMAL: "", ALTERNATIVE: "alternative", COMPENSATION: "compensation" } as const;

const ENDED_RUN: ReadonlySet<RunState> = new Set([
  RunState.RUN_STATE_COMPLETED,
  RunState.RUN_STATE_FAILED,
  RunState.RUN_STATE_CANCELLED,
  RunState.RUN_STATE_COMPENSATED,
]);

const ENDED_TASK: ReadonlySet<TaskState> = new Set([
  TaskState.TASK_STATE_COMPLETED,
  TaskState.TASK_STATE_FAILED,
  TaskState.TASK_STATE_BLOCKED,
  TaskState.TASK_STATE_SKIPPED,
  TaskState.TASK_STATE_CANCELLED,
]);

/**
 * Whether a run has ended: COMPLETED, FAILED, CANCELLED or COMPENSATED (COMPENSATING has not:
 * its compensation tasks are still running). A state a newer server adds is not taken for one.
 */
export function ended(run: Run): boolean {
  return ENDED_RUN.has(run.state);
}

/** Whether a run ended COMPLETED (a COMPENSATED run ended after a failure). */
export function succeeded(run: Run): boolean {
  return run.state === RunState.RUN_STATE_COMPLETED;
}

/**
 * Whether a task is settled and will not run again: COMPLETED, FAILED, BLOCKED, SKIPPED or
 * CANCELLED (RETRY_WAIT has not: its next attempt is due at `retryTime`).
 */
export function taskEnded(task: TaskRun): boolean {
  return ENDED_TASK.has(task.state);
}

/**
 * A result stored out of line (over the inline limit) that this response did not carry:
 * `WatchRun` never does, `GetRun` only while the response stays within its budget. Read the
 * run again with `get` to receive it.
 */
export class ResultNotInlineError extends Error {
  constructor(
    readonly taskId: string,
    readonly size: number,
  ) {
    super(`result of task ${JSON.stringify(taskId)} (${size} bytes) is stored out of line, not in this response`);
    this.name = "ResultNotInlineError";
  }
}

/**
 * A task's result, parsed from its JSON text (undefined when it has none yet, or the task is
 * undefined). Throws `ResultNotInlineError` for a result the response did not carry.
 */
export function result<T = unknown>(task: TaskRun | undefined): T | undefined {
  if (task?.resultJson) return JSON.parse(task.resultJson) as T;
  if (task && task.resultSize > 0) throw new ResultNotInlineError(task.taskId, task.resultSize);
  return undefined;
}

/**
 * The result of every COMPLETED task by task id (`JSON.parse`d). A result stored out of line
 * and not carried by the response is left out; its task's `resultSize` tells it is there.
 */
export function results(run: Run): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const task of run.tasks) {
    if (task.state === TaskState.TASK_STATE_COMPLETED && task.resultJson) out[task.taskId] = JSON.parse(task.resultJson);
  }
  return out;
}

/** A run's task by id. */
export function findTask(run: Run, taskId: string): TaskRun | undefined {
  return run.tasks.find((t) => t.taskId === taskId);
}

/** Milliseconds from a task's latest dispatch to its end; undefined until both are known. */
export function duration(task: TaskRun): number | undefined {
  if (!task.dispatchTime || !task.endTime) return undefined;
  return task.endTime.getTime() - task.dispatchTime.getTime();
}
