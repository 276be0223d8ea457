// Package stellwerk is the Go client of Stellwerk, a distributed workflow engine, and its
// task-worker library.
//
// A workflow is a definition (a workflow file); a run is one execution of it. Submit a
// workflow file, then follow its run:
//
//	client, err := stellwerk.Dial("127.0.0.1:50051")
//	if err != nil { ... }
//	defer client.Close()
//	run, err := client.SubmitFile(ctx, "examples/simple_mcp_workflow.yaml")
//	run, err = client.Wait(ctx, run.GetRunId())
//
// Errors from the server are *Error values carrying the gRPC code, the ErrorInfo reason and
// the BadRequest violations; test them with errors.Is against ErrNotFound,
// ErrInvalidArgument, ... or errors.As for the details.
//
// Tasks can run in Go: a Worker connects to an executor, registers handlers for methods and
// runs the attempts the executor hands it (see NewWorker).
package stellwerk
