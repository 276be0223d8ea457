// The helpers on the contract's messages, offline.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  BreakerState,
  duration,
  ended,
  findTask,
  result,
  results,
  ResultNotInlineError,
  Role,
  RunState,
  succeeded,
  taskEnded,
  TaskState,
  type CircuitBreaker,
  type Run,
  type TaskRun,
} from "../src/index.js";
import { Run as RunMessage, TaskRun as TaskRunMessage } from "../src/gen/stellwerk/workflow/v1/workflow.js";

const task = (fields: Partial<TaskRun>): TaskRun => ({ ...TaskRunMessage.fromPartial({}), ...fields });
const run = (fields: Partial<Run>): Run => ({ ...RunMessage.fromPartial({}), ...fields });

test("ended knows every run state; COMPENSATED has ended, COMPENSATING has not", () => {
  const want = new Map<RunState, boolean>([
    [RunState.RUN_STATE_UNSPECIFIED, false],
    [RunState.RUN_STATE_RUNNING, false],
    [RunState.RUN_STATE_COMPENSATING, false],
    [RunState.RUN_STATE_COMPLETED, true],
    [RunState.RUN_STATE_FAILED, true],
    [RunState.RUN_STATE_CANCELLED, true],
    [RunState.RUN_STATE_COMPENSATED, true],
    [RunState.UNRECOGNIZED, false],
  ]);
  for (const [state, done] of want) assert.equal(ended(run({ state })), done, RunState[state]);
  assert.ok(succeeded(run({ state: RunState.RUN_STATE_COMPLETED })));
  assert.ok(!succeeded(run({ state: RunState.RUN_STATE_COMPENSATED })));
});

test("taskEnded knows every task state; RETRY_WAIT has not ended", () => {
  const settled = [
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_BLOCKED,
    TaskState.TASK_STATE_SKIPPED,
    TaskState.TASK_STATE_CANCELLED,
  ];
  for (const state of Object.values(TaskState).filter((v): v is TaskState => typeof v === "number")) {
    assert.equal(taskEnded(task({ state })), settled.includes(state), TaskState[state]);
  }
  assert.ok(!taskEnded(task({ state: TaskState.TASK_STATE_RETRY_WAIT })));
});

test("results, and a result stored out of line that the response did not carry", () => {
  const r = run({
    tasks: [
      task({ taskId: "a", state: TaskState.TASK_STATE_COMPLETED, resultJson: '{"n": 42}' }),
      task({ taskId: "big", state: TaskState.TASK_STATE_COMPLETED, resultSize: 5 << 20 }),
      task({ taskId: "skipped", state: TaskState.TASK_STATE_SKIPPED, error: "broke" }),
      task({ taskId: "undo", state: TaskState.TASK_STATE_COMPLETED, resultJson: "null", role: Role.COMPENSATION }),
    ],
  });
  assert.deepEqual(results(r), { a: { n: 42 }, undo: null });
  assert.deepEqual(result(findTask(r, "a")), { n: 42 });
  assert.throws(() => result(findTask(r, "big")), (err: unknown) => {
    assert.ok(err instanceof ResultNotInlineError);
    assert.equal(err.taskId, "big");
    assert.equal(err.size, 5 << 20);
    return true;
  });
  assert.equal(result(findTask(r, "skipped")), undefined);
  assert.equal(result(findTask(r, "nope")), undefined);
  assert.equal(findTask(r, "undo")?.role, "compensation");
});

test("duration from dispatch to end", () => {
  const start = new Date("2026-01-02T03:04:05Z");
  assert.equal(duration(task({ dispatchTime: start })), undefined);
  assert.equal(duration(task({ dispatchTime: start, endTime: new Date(start.getTime() + 1500) })), 1500);
});

test("circuit breakers and restarts are on the run", () => {
  const breaker: CircuitBreaker = { scope: "method:x/y", state: BreakerState.BREAKER_STATE_OPEN, failures: 3, retryTime: undefined, changeTime: undefined };
  const r = run({ breakers: [breaker], restarts: 2 });
  assert.equal(r.breakers[0]?.state, BreakerState.BREAKER_STATE_OPEN);
  assert.equal(r.restarts, 2);
});
