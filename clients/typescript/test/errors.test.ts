import assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { BinaryWriter } from "@bufbuild/protobuf/wire";

import { DeadlineExceededError, fromServiceError, InvalidArgumentError, UnavailableError } from "../src/index.js";

function any(typeUrl: string, value: Uint8Array): Uint8Array {
  return new BinaryWriter().uint32(10).string(typeUrl).uint32(18).bytes(value).finish();
}

test("a rich status becomes a typed error with reason, metadata and every violation", () => {
  const info = new BinaryWriter()
    .uint32(10).string("WORKFLOW_INVALID")
    .uint32(18).string("stellwerk.dev")
    .uint32(26).bytes(new BinaryWriter().uint32(10).string("problem_count").uint32(18).string("2").finish())
    .finish();
  const violation = (field: string, description: string) =>
    new BinaryWriter().uint32(10).string(field).uint32(18).string(description).finish();
  const bad = new BinaryWriter()
    .uint32(10).bytes(violation("tasks[a].method", "unknown method"))
    .uint32(10).bytes(violation("tasks[b].dependencies", "cycle"))
    .finish();
  const st = new BinaryWriter()
    .uint32(8).int32(status.INVALID_ARGUMENT)
    .uint32(18).string("workflow is invalid")
    .uint32(26).bytes(any("type.googleapis.com/google.rpc.ErrorInfo", info))
    .uint32(26).bytes(any("type.googleapis.com/google.rpc.BadRequest", bad))
    .finish();
  const metadata = new Metadata();
  metadata.set("grpc-status-details-bin", Buffer.from(st));
  const err = Object.assign(new Error("3 INVALID_ARGUMENT: workflow is invalid"), {
    code: status.INVALID_ARGUMENT,
    details: "workflow is invalid",
    metadata,
  });
  const typed = fromServiceError(err);
  assert.ok(typed instanceof InvalidArgumentError);
  assert.equal(typed.reason, "WORKFLOW_INVALID");
  assert.equal(typed.domain, "stellwerk.dev");
  assert.deepEqual(typed.metadata, { problem_count: "2" });
  assert.deepEqual(typed.violations, [
    { field: "tasks[a].method", description: "unknown method" },
    { field: "tasks[b].dependencies", description: "cycle" },
  ]);
  assert.equal(typed.message, "workflow is invalid");
});

test("a deadline is a kind of unavailable; other errors pass through", () => {
  const err = Object.assign(new Error("late"), { code: status.DEADLINE_EXCEEDED, details: "late", metadata: new Metadata() });
  const typed = fromServiceError(err);
  assert.ok(typed instanceof DeadlineExceededError && typed instanceof UnavailableError);
  const plain = new TypeError("x");
  assert.equal(fromServiceError(plain), plain);
});
