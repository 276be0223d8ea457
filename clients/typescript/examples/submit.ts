// Run a workflow file on Stellwerk and print its tasks' results.
//   STELLWERK_ADDRESS=127.0.0.1:50051 node dist/examples/submit.js ../../examples/simple_mcp_workflow.yaml
import { InvalidArgumentError, RunState, StellwerkClient, TaskState } from "../src/index.js";

const file = process.argv[2];
if (!file) {
  console.error("usage: submit WORKFLOW_FILE");
  process.exit(2);
}
const client = new StellwerkClient(); // STELLWERK_ADDRESS or 127.0.0.1:50051
try {
  const started = await client.submitFile(file);
  console.log("run", started.runId);
  const run = await client.wait(started.runId, { signal: AbortSignal.timeout(120_000) });
  for (const task of run.tasks) {
    console.log(task.taskId.padEnd(12), TaskState[task.state].padEnd(22), task.resultJson || task.error);
  }
  console.log(RunState[run.state]);
  process.exitCode = run.state === RunState.RUN_STATE_COMPLETED ? 0 : 1;
} catch (err) {
  if (err instanceof InvalidArgumentError) {
    for (const v of err.violations) console.error(`${v.field}: ${v.description}`); // every problem
  }
  console.error(String(err));
  process.exitCode = err instanceof InvalidArgumentError ? 2 : 3;
} finally {
  client.close();
}
