// Against a live stack: STELLWERK_ADDRESS (a resolver) and, for the worker,
// STELLWERK_EXECUTOR_ADDRESS (an executor). Skipped without them; `make test` sets both.
import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

import {
  DeadlineExceededError,
  findTask,
  InvalidArgumentError,
  NotFoundError,
  result,
  RunState,
  StellwerkError,
  StellwerkClient,
  Worker,
  ended,
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

test("a worker serves a method inside a workflow", { skip: live.skip || (executor ? false : "STELLWERK_EXECUTOR_ADDRESS is not set") }, async () => {
  const method = `tstest/reverse.${Date.now()}`;
  const worker = new Worker(executor, { workerId: "ts-test", concurrency: 2, log: null });
  worker.registerHandler<{ text: string }>(method, (task) => ({
    text: [...task.params.text].reverse().join(""),
    key: task.idempotencyKey,
  }));
  const serving = worker.run();
  try {
    const doc = JSON.stringify({
      name: "ts worker",
      tasks: [
        { id: "rev", method, params: { text: "stellwerk" } },
        { id: "say", method: "mcp/tool.echo", dependencies: ["rev"], params: { message: "${rev.text}" } },
      ],
    });
    // The worker registers in the background: until then the method is unknown.
    const deadline = Date.now() + 30_000;
    let run;
    for (;;) {
      try {
        run = await client!.submit(doc);
        break;
      } catch (err) {
        if (!(err instanceof InvalidArgumentError) || Date.now() > deadline) throw err;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
    const done = await client!.wait(run.runId, { signal: AbortSignal.timeout(60_000) });
    assert.equal(done.state, RunState.RUN_STATE_COMPLETED, done.error);
    assert.equal(result<{ response: string }>(findTask(done, "say"))?.response, "krewllets");
  } finally {
    worker.stop();
    await serving;
  }
});
