// Against a live stack: STELLWERK_ADDRESS (a resolver) and, for the worker,
// STELLWERK_EXECUTOR_ADDRESS (an executor). Skipped without them; `make test` sets both.
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import {
  DeadlineExceededError,
  FailedPreconditionError,
  findTask,
  InvalidArgumentError,
  NotFoundError,
  result,
  results,
  Role,
  RunState,
  succeeded,
  taskEnded,
  TaskState,
  type Run,
  StellwerkError,
  StellwerkClient,
  Worker,
  ended,
  type Handler,
  type Task,
} from "../src/index.js";

const address = process.env.STELLWERK_ADDRESS;
const executor = process.env.STELLWERK_EXECUTOR_ADDRESS;
const live = { skip: address ? false : "STELLWERK_ADDRESS is not set (no stack to test against)" };
const client = address ? new StellwerkClient(address) : undefined;
after(() => client?.close());

const ADD_THEN_ECHO = `
name: ts client
tasks:
  - id: add
    method: mcp/tool.add
    params: {a: 40, b: 2}
  - id: say
    method: mcp/tool.echo
    dependencies: [add]
    params: {message: "sum \${add}"}
`;

test("submitFile, wait and results", live, async () => {
  const dir = await mkdtemp(join(tmpdir(), "stellwerk-ts-"));
  const path = join(dir, "wf.yaml");
  await writeFile(path, ADD_THEN_ECHO);
  const run = await client!.submitFile(path);
  assert.match(run.runId, /^[0-9a-f]{22}$/);
  assert.equal(run.workflowName, "ts client");
  const done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
  assert.equal(done.state, RunState.RUN_STATE_COMPLETED, done.error);
  assert.equal(result<{ result: number }>(findTask(done, "add"))?.result, 42);
  assert.equal(result<{ response: string }>(findTask(done, "say"))?.response, "sum 42");
});

test("watch yields the current state first and ends with the run", live, async () => {
  const run = await client!.submit(ADD_THEN_ECHO);
  const updates = [];
  for await (const update of client!.watch(run.runId)) updates.push(update);
  assert.ok(updates.length > 0);
  assert.ok(ended(updates.at(-1)!.run));
  assert.equal((await client!.get(run.runId)).tasks.length, 2);
});

test("validate reports every problem; list finds runs by state", live, async () => {
  const invalid = await client!.validate("tasks:\n  - {id: a, method: no/such.method}\n  - {id: b, method: mcp/tool.echo, dependencies: [zzz]}\n");
  assert.deepEqual([...new Set(invalid.problems.map((p) => p.task))].sort(), ["a", "b"]);
  const valid = await client!.validate(ADD_THEN_ECHO);
  assert.deepEqual(valid.problems, []);
  assert.equal(valid.taskCount, 2);
  assert.deepEqual((await client!.validate("tasks: [{id: a, method: not/yet.registered}]", { allowUnregistered: true })).problems, []);

  const run = await client!.submit(ADD_THEN_ECHO);
  await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
  let found = false;
  for await (const listed of client!.list({ state: RunState.RUN_STATE_COMPLETED, pageSize: 5 })) {
    assert.equal(listed.state, RunState.RUN_STATE_COMPLETED);
    assert.equal(listed.tasks.length, 0);
    if (listed.runId === run.runId) {
      found = true;
      break;
    }
  }
  assert.ok(found, "the completed run is listed");
  for await (const listed of client!.list({ state: RunState.RUN_STATE_CANCELLED })) assert.notEqual(listed.runId, run.runId);
});

test("a request id makes submit idempotent", live, async () => {
  const requestId = `ts-${Date.now()}-${Math.random()}`;
  const first = await client!.submit(ADD_THEN_ECHO, { requestId });
  const again = await client!.submit(ADD_THEN_ECHO, { requestId });
  assert.equal(again.runId, first.runId);
});

test("errors are typed", live, async () => {
  await assert.rejects(client!.get("0".repeat(22)), NotFoundError);
  const invalid = "tasks:\n  - {id: a, method: no/such.method}\n  - {id: b, method: mcp/tool.echo, dependencies: [zzz]}\n";
  await assert.rejects(client!.submit(invalid), (err: unknown) => {
    assert.ok(err instanceof InvalidArgumentError);
    assert.ok(err.violations.length >= 2, JSON.stringify(err.violations));
    assert.ok(err.reason);
    return true;
  });
  await assert.rejects(client!.get("0".repeat(22), { timeoutMs: 0 }), DeadlineExceededError);
  await assert.rejects(client!.get("0".repeat(22), { signal: AbortSignal.abort() }), StellwerkError);
});

const workerSkip = { skip: live.skip || (executor ? false : "STELLWERK_EXECUTOR_ADDRESS is not set") };

/** Run a worker serving `method` while `body` runs. */
async function serving<P>(method: string, fn: Handler<P>, body: () => Promise<void>): Promise<void> {
  const worker = new Worker(executor, { workerId: "ts-test", concurrency: 2, log: null });
  worker.registerHandler<P>(method, fn);
  const served = worker.run();
  try {
    await body();
  } finally {
    worker.stop();
    await served;
  }
}

/** Submit `doc`, retrying while a worker's method is not registered yet (it registers in the background). */
async function submitServed(doc: string): Promise<Run> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      return await client!.submit(doc);
    } catch (err) {
      if (!(err instanceof InvalidArgumentError) || Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

test("a worker serves a method inside a workflow", workerSkip, async () => {
  const method = `tstest/reverse.${Date.now()}`;
  const reverse = (task: Task<{ text: string }>) => ({ text: [...task.params.text].reverse().join(""), key: task.idempotencyKey });
  await serving(method, reverse, async () => {
    const doc = JSON.stringify({
      name: "ts worker",
      tasks: [
        { id: "rev", method, params: { text: "stellwerk" } },
        { id: "say", method: "mcp/tool.echo", dependencies: ["rev"], params: { message: "${rev.text}" } },
      ],
    });
    const run = await submitServed(doc);
    const done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.equal(done.state, RunState.RUN_STATE_COMPLETED, done.error);
    assert.equal(result<{ response: string }>(findTask(done, "say"))?.response, "krewllets");
  });
});

// A task under on_failure compensate fails for good after two attempts: the compensation of
// the completed task runs and the run ends COMPENSATED, which wait returns.
test("a saga ends COMPENSATED, with roles and attempt history", workerSkip, async () => {
  const method = `tstest/declines.${Date.now()}`;
  const decline = (task: Task) => {
    throw new Error(`declined on attempt ${task.attempt}`);
  };
  await serving(method, decline, async () => {
    const run = await submitServed(`
name: ts saga
tasks:
  - {id: charge, method: mcp/tool.echo, params: {message: charged}, compensation_task: refund}
  - id: ship
    method: ${method}
    dependencies: [charge]
    retry: {max_attempts: 2, backoff: fixed, base_delay: 1, jitter: false}
    on_failure: compensate
  - {id: refund, method: mcp/tool.echo, dependencies: [charge], params: {message: "undo \${charge.response}"}}
`);
    // Between its attempts, ship waits for its retry (RETRY_WAIT, due at retryTime): not ended.
    let waited = false;
    for await (const { task } of client!.watch(run.runId, { signal: AbortSignal.timeout(60_000) })) {
      if (task?.taskId === "ship" && task.state === TaskState.TASK_STATE_RETRY_WAIT) {
        waited = true;
        assert.ok(task.retryTime instanceof Date);
        assert.ok(!taskEnded(task));
        assert.equal(task.attempts, 1);
      }
    }
    assert.ok(waited, "the watch showed ship in RETRY_WAIT");
    const done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.equal(done.state, RunState.RUN_STATE_COMPENSATED, done.error);
    assert.ok(ended(done) && !succeeded(done));
    assert.ok(done.endTime instanceof Date);
    assert.match(done.error, /declined on attempt 2/);
    const ship = findTask(done, "ship")!;
    assert.equal(ship.state, TaskState.TASK_STATE_FAILED);
    assert.equal(ship.attempts, 2);
    assert.equal(ship.role, Role.NORMAL);
    assert.deepEqual(
      ship.attemptHistory.map((a) => [a.number, a.error, a.executorId !== "", a.endTime instanceof Date]),
      [
        [1, "declined on attempt 1", true, true],
        [2, "declined on attempt 2", true, true],
      ],
    );
    const refund = findTask(done, "refund")!;
    assert.equal(refund.state, TaskState.TASK_STATE_COMPLETED);
    assert.equal(refund.role, Role.COMPENSATION);
    assert.deepEqual(Object.keys(results(done)).sort(), ["charge", "refund"]);
    assert.ok(done.tasks.every(taskEnded));
    await assert.rejects(client!.retry(done.runId), FailedPreconditionError);
  });
});

test("retry counts restarts; cancel ends a running run", workerSkip, async () => {
  const method = `tstest/fails-once.${Date.now()}`;
  let calls = 0;
  const failsOnce = () => {
    if (++calls === 1) throw new Error("first call fails");
    return { ok: true };
  };
  await serving(method, failsOnce, async () => {
    const run = await submitServed(JSON.stringify({ name: "ts retry", tasks: [{ id: "t", method }] }));
    let done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.equal(done.state, RunState.RUN_STATE_FAILED);
    assert.equal(done.restarts, 0);
    const again = await client!.retry(run.runId);
    assert.equal(again.restarts, 1);
    done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.equal(done.state, RunState.RUN_STATE_COMPLETED, done.error);
    assert.equal(done.restarts, 1);
  });
  const slow = `tstest/slow.${Date.now()}`;
  const waitForGiveUp = (task: Task) => new Promise((_, reject) => task.signal.addEventListener("abort", () => reject(new Error("given up"))));
  await serving(slow, waitForGiveUp, async () => {
    const run = await submitServed(JSON.stringify({ name: "ts cancel", tasks: [{ id: "s", method: slow }] }));
    const cancelled = await client!.cancel(run.runId);
    assert.equal(cancelled.state, RunState.RUN_STATE_CANCELLED);
    const done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.ok(ended(done));
    assert.equal(findTask(done, "s")?.state, TaskState.TASK_STATE_CANCELLED);
  });
});
