package stellwerk_test

// These tests run against a live stack: STELLWERK_ADDRESS (a resolver) and, for the worker,
// STELLWERK_EXECUTOR_ADDRESS (an executor). Without them they are skipped; `make test` sets
// both (tests/polyglot/test_clients.py).

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	stellwerk "stellwerk.dev/clients/go"
)

func dial(t *testing.T) *stellwerk.Client {
	t.Helper()
	address := os.Getenv("STELLWERK_ADDRESS")
	if address == "" {
		t.Skip("STELLWERK_ADDRESS is not set (no stack to test against)")
	}
	client, err := stellwerk.Dial(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const addThenEcho = `
name: go client
tasks:
  - id: add
    method: mcp/tool.add
    params: {a: 40, b: 2}
  - id: say
    method: mcp/tool.echo
    dependencies: [add]
    params: {message: "sum ${add}"}
`

func TestSubmitFileWaitAndResults(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	path := filepath.Join(t.TempDir(), "wf.yaml")
	if err := os.WriteFile(path, []byte(addThenEcho), 0o600); err != nil {
		t.Fatal(err)
	}
	run, err := client.SubmitFile(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.GetRunId()) != 22 || run.GetWorkflowName() != "go client" {
		t.Fatalf("run: %v", run)
	}
	done, err := client.Wait(ctx, run.GetRunId())
	if err != nil {
		t.Fatal(err)
	}
	if done.GetState() != stellwerk.RunCompleted {
		t.Fatalf("state %s: %s", done.GetState(), done.GetError())
	}
	var sum struct{ Result int64 }
	if err := stellwerk.Result(stellwerk.FindTask(done, "add"), &sum); err != nil || sum.Result != 42 {
		t.Errorf("add: %v %v", sum, err)
	}
	var say struct{ Response string }
	if err := stellwerk.Result(stellwerk.FindTask(done, "say"), &say); err != nil || say.Response != "sum 42" {
		t.Errorf("say: %v %v", say, err)
	}
}

func TestWatchYieldsTheCurrentStateThenEndsWithTheRun(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	run, err := client.Submit(ctx, addThenEcho)
	if err != nil {
		t.Fatal(err)
	}
	var last stellwerk.Update
	updates := 0
	for update, err := range client.Watch(ctx, run.GetRunId()) {
		if err != nil {
			t.Fatal(err)
		}
		updates++
		last = update
	}
	if updates == 0 || !stellwerk.Ended(last.Run) {
		t.Fatalf("%d updates, last %v", updates, last.Run)
	}
	got, err := client.Get(ctx, run.GetRunId())
	if err != nil || len(got.GetTasks()) != 2 {
		t.Fatalf("get: %v %v", got, err)
	}
}

func TestValidateReportsEveryProblemAndListFindsRuns(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	verdict, err := client.Validate(ctx, "tasks:\n  - {id: a, method: no/such.method}\n  - {id: b, method: mcp/tool.echo, dependencies: [zzz]}\n", false)
	if err != nil {
		t.Fatal(err)
	}
	tasks := map[string]bool{}
	for _, problem := range verdict.GetProblems() {
		tasks[problem.GetTask()] = problem.GetMessage() != ""
	}
	if !tasks["a"] || !tasks["b"] {
		t.Fatalf("every problem: %v", verdict.GetProblems())
	}
	verdict, err = client.Validate(ctx, addThenEcho, false)
	if err != nil || len(verdict.GetProblems()) != 0 || verdict.GetTaskCount() != 2 {
		t.Fatalf("valid: %v %v", verdict, err)
	}
	if verdict, err = client.Validate(ctx, "tasks: [{id: a, method: not/yet.registered}]", true); err != nil || len(verdict.GetProblems()) != 0 {
		t.Fatalf("allowUnregistered: %v %v", verdict, err)
	}

	run, err := client.Submit(ctx, addThenEcho)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = client.Wait(ctx, run.GetRunId()); err != nil {
		t.Fatal(err)
	}
	found := false
	for listed, err := range client.List(ctx, stellwerk.RunCompleted) {
		if err != nil {
			t.Fatal(err)
		}
		if listed.GetState() != stellwerk.RunCompleted || len(listed.GetTasks()) != 0 {
			t.Fatalf("listed: %v", listed)
		}
		if listed.GetRunId() == run.GetRunId() {
			found = true
			break
		}
	}
	if !found {
		t.Error("the completed run is not listed")
	}
	for listed, err := range client.List(ctx, stellwerk.RunCancelled) {
		if err != nil {
			t.Fatal(err)
		}
		if listed.GetRunId() == run.GetRunId() {
			t.Error("filtered by state: a COMPLETED run listed as CANCELLED")
		}
	}
}

func TestSubmitIsIdempotentWithARequestID(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	id := fmt.Sprintf("go-test-%d", time.Now().UnixNano())
	first, err := client.Submit(ctx, addThenEcho, stellwerk.WithRequestID(id))
	if err != nil {
		t.Fatal(err)
	}
	again, err := client.Submit(ctx, addThenEcho, stellwerk.WithRequestID(id))
	if err != nil || again.GetRunId() != first.GetRunId() {
		t.Fatalf("%v %v", again, err)
	}
}

func TestErrorsAreTyped(t *testing.T) {
	client, ctx := dial(t), timeout(t)

	_, err := client.Get(ctx, strings.Repeat("0", 22))
	if !errors.Is(err, stellwerk.ErrNotFound) {
		t.Errorf("unknown run: %v", err)
	}

	_, err = client.Submit(ctx, "tasks:\n  - {id: a, method: no/such.method}\n  - {id: b, method: mcp/tool.echo, dependencies: [zzz]}\n")
	var serr *stellwerk.Error
	if !errors.As(err, &serr) || !errors.Is(err, stellwerk.ErrInvalidArgument) {
		t.Fatalf("invalid workflow: %v", err)
	}
	if len(serr.Violations) < 2 || serr.Reason == "" {
		t.Errorf("every problem listed: %+v", serr)
	}

	short, cancel := context.WithTimeout(ctx, time.Nanosecond)
	defer cancel()
	<-short.Done()
	if _, err = client.Get(short, strings.Repeat("0", 22)); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}
}

// serve runs a worker serving method with fn until the test ends.
func serve(t *testing.T, ctx context.Context, method string, fn stellwerk.Handler) {
	t.Helper()
	executor := os.Getenv("STELLWERK_EXECUTOR_ADDRESS")
	if executor == "" {
		t.Skip("STELLWERK_EXECUTOR_ADDRESS is not set")
	}
	worker := stellwerk.NewWorker(executor, stellwerk.WithWorkerID("go-test"), stellwerk.WithConcurrency(2))
	worker.RegisterHandler(method, fn)
	workerCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(workerCtx) }()
	t.Cleanup(func() { stop(); <-stopped })
}

// submitServed submits doc, retrying while a worker's method is not registered yet (the worker
// registers in the background).
func submitServed(t *testing.T, ctx context.Context, client *stellwerk.Client, doc string) *stellwerk.Run {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		run, err := client.Submit(ctx, doc)
		if err == nil {
			return run
		}
		if !errors.Is(err, stellwerk.ErrInvalidArgument) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAWorkerServesAMethodInAWorkflow(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	method := fmt.Sprintf("gotest/reverse.%d", time.Now().UnixNano())
	serve(t, ctx, method, func(ctx context.Context, task *stellwerk.Task) (any, error) {
		var p struct{ Text string }
		if err := task.Decode(&p); err != nil {
			return nil, err
		}
		r := []rune(p.Text)
		for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
			r[i], r[j] = r[j], r[i]
		}
		return map[string]any{"text": string(r), "key": task.IdempotencyKey}, nil
	})
	doc := fmt.Sprintf(`{"name": "go worker", "tasks": [
		{"id": "rev", "method": %q, "params": {"text": "stellwerk"}},
		{"id": "say", "method": "mcp/tool.echo", "dependencies": ["rev"], "params": {"message": "${rev.text}"}}]}`, method)
	run := submitServed(t, ctx, client, doc)
	done, err := client.Wait(ctx, run.GetRunId())
	if err != nil || done.GetState() != stellwerk.RunCompleted {
		t.Fatalf("%v %v", done, err)
	}
	var say struct{ Response string }
	if err := stellwerk.Result(stellwerk.FindTask(done, "say"), &say); err != nil || say.Response != "krewllets" {
		t.Errorf("say: %v %v", say, err)
	}
}

// A task under on_failure compensate fails for good after two attempts: the compensation of
// the completed task runs and the run ends COMPENSATED, which Wait returns.
func TestASagaEndsCompensatedWithRolesAndAttemptHistory(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	method := fmt.Sprintf("gotest/declines.%d", time.Now().UnixNano())
	serve(t, ctx, method, func(ctx context.Context, task *stellwerk.Task) (any, error) {
		return nil, fmt.Errorf("declined on attempt %d", task.Attempt)
	})
	run := submitServed(t, ctx, client, fmt.Sprintf(`
name: go saga
tasks:
  - {id: charge, method: mcp/tool.echo, params: {message: charged}, compensation_task: refund}
  - id: ship
    method: %s
    dependencies: [charge]
    retry: {max_attempts: 2, backoff: fixed, base_delay: 1, jitter: false}
    on_failure: compensate
  - {id: refund, method: mcp/tool.echo, dependencies: [charge], params: {message: "undo ${charge.response}"}}
`, method))
	// Between its attempts, ship waits for its retry (RETRY_WAIT, due at GetRetryTime): not ended.
	waited := false
	for update, err := range client.Watch(ctx, run.GetRunId()) {
		if err != nil {
			t.Fatal(err)
		}
		if task := update.Task; task.GetTaskId() == "ship" && task.GetState() == stellwerk.TaskRetryWait {
			waited = true
			if task.GetRetryTime() == nil || stellwerk.TaskEnded(task) || task.GetAttempts() != 1 {
				t.Errorf("waiting: %v", task)
			}
		}
	}
	if !waited {
		t.Error("the watch never showed ship in RETRY_WAIT")
	}
	done, err := client.Wait(ctx, run.GetRunId())
	if err != nil {
		t.Fatal(err)
	}
	if done.GetState() != stellwerk.RunCompensated || !stellwerk.Ended(done) || stellwerk.Succeeded(done) {
		t.Fatalf("state %s: %s", done.GetState(), done.GetError())
	}
	if done.GetEndTime() == nil || !strings.Contains(done.GetError(), "declined on attempt 2") {
		t.Errorf("run: end %v, error %q", done.GetEndTime(), done.GetError())
	}
	ship, refund := stellwerk.FindTask(done, "ship"), stellwerk.FindTask(done, "refund")
	if ship.GetState() != stellwerk.TaskFailed || ship.GetAttempts() != 2 || ship.GetRole() != stellwerk.RoleNormal {
		t.Errorf("ship: %v", ship)
	}
	history := ship.GetAttemptHistory()
	if len(history) != 2 {
		t.Fatalf("history: %v", history)
	}
	for i, attempt := range history {
		if attempt.GetNumber() != int32(i+1) || attempt.GetExecutorId() == "" || attempt.GetEndTime() == nil ||
			attempt.GetError() != fmt.Sprintf("declined on attempt %d", i+1) {
			t.Errorf("attempt %d: %v", i+1, attempt)
		}
	}
	if refund.GetState() != stellwerk.TaskCompleted || refund.GetRole() != stellwerk.RoleCompensation {
		t.Errorf("refund: %v", refund)
	}
	results := stellwerk.Results(done)
	if string(results["refund"]) == "" || string(results["charge"]) == "" || len(results) != 2 {
		t.Errorf("results: %v", results)
	}
	for _, task := range done.GetTasks() {
		if !stellwerk.TaskEnded(task) {
			t.Errorf("task %s not ended: %s", task.GetTaskId(), task.GetState())
		}
	}
	if _, err := client.Retry(ctx, done.GetRunId()); !errors.Is(err, stellwerk.ErrFailedPrecondition) {
		t.Errorf("a COMPENSATED run is not retried: %v", err)
	}
}

// Retry re-runs a failed run; Run.GetRestarts counts it. Cancel ends a running one.
func TestRetryCountsRestartsAndCancelEndsARun(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	method := fmt.Sprintf("gotest/fails-once.%d", time.Now().UnixNano())
	calls := make(chan struct{}, 10)
	serve(t, ctx, method, func(ctx context.Context, task *stellwerk.Task) (any, error) {
		calls <- struct{}{}
		if len(calls) == 1 {
			return nil, errors.New("first call fails")
		}
		return map[string]any{"ok": true}, nil
	})
	run := submitServed(t, ctx, client, fmt.Sprintf(`{"name": "go retry", "tasks": [{"id": "t", "method": %q}]}`, method))
	done, err := client.Wait(ctx, run.GetRunId())
	if err != nil || done.GetState() != stellwerk.RunFailed || done.GetRestarts() != 0 {
		t.Fatalf("first run: %v %v", done, err)
	}
	again, err := client.Retry(ctx, run.GetRunId())
	if err != nil || again.GetRestarts() != 1 {
		t.Fatalf("retry: %v %v", again, err)
	}
	done, err = client.Wait(ctx, run.GetRunId())
	if err != nil || done.GetState() != stellwerk.RunCompleted || done.GetRestarts() != 1 {
		t.Fatalf("re-run: %v %v", done, err)
	}

	slow := fmt.Sprintf("gotest/slow.%d", time.Now().UnixNano())
	serve(t, ctx, slow, func(ctx context.Context, task *stellwerk.Task) (any, error) {
		<-ctx.Done() // until the executor gives the attempt up (the run is cancelled)
		return nil, ctx.Err()
	})
	run = submitServed(t, ctx, client, fmt.Sprintf(`{"name": "go cancel", "tasks": [{"id": "s", "method": %q}]}`, slow))
	cancelled, err := client.Cancel(ctx, run.GetRunId())
	if err != nil || cancelled.GetState() != stellwerk.RunCancelled {
		t.Fatalf("cancel: %v %v", cancelled, err)
	}
	done, err = client.Wait(ctx, run.GetRunId())
	if err != nil || !stellwerk.Ended(done) || stellwerk.FindTask(done, "s").GetState() != stellwerk.TaskCancelled {
		t.Fatalf("cancelled run: %v %v", done, err)
	}
}
