// A worker serving demo/ts.wrap: {text, left, right} -> {wrapped, length, worker}.
//   STELLWERK_EXECUTOR_ADDRESS=127.0.0.1:50052 node dist/examples/worker.js ts-1
import { Worker } from "../src/index.js";

const id = process.argv[2] ?? "ts-worker";
const worker = new Worker(undefined, { workerId: id, concurrency: 4 }); // STELLWERK_EXECUTOR_ADDRESS

worker.registerHandler<{ text: string; left?: string; right?: string }>("demo/ts.wrap", (task) => {
  const wrapped = `${task.params.left ?? "["}${task.params.text}${task.params.right ?? "]"}`;
  return { wrapped, length: [...wrapped].length, worker: id };
});

process.once("SIGTERM", () => worker.stop());
process.once("SIGINT", () => worker.stop());
await worker.run();
