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

func TestAWorkerServesAMethodInAWorkflow(t *testing.T) {
	client, ctx := dial(t), timeout(t)
	executor := os.Getenv("STELLWERK_EXECUTOR_ADDRESS")
	if executor == "" {
		t.Skip("STELLWERK_EXECUTOR_ADDRESS is not set")
	}
	method := fmt.Sprintf("gotest/reverse.%d", time.Now().UnixNano())
	worker := stellwerk.NewWorker(executor, stellwerk.WithWorkerID("go-test"), stellwerk.WithConcurrency(2))
	worker.RegisterHandler(method, func(ctx context.Context, task *stellwerk.Task) (any, error) {
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
	workerCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- worker.Run(workerCtx) }()
	defer func() { stop(); <-stopped }()

	doc := fmt.Sprintf(`{"name": "go worker", "tasks": [
		{"id": "rev", "method": %q, "params": {"text": "stellwerk"}},
		{"id": "say", "method": "mcp/tool.echo", "dependencies": ["rev"], "params": {"message": "${rev.text}"}}]}`, method)
	var run *stellwerk.Run
	var err error
	// The worker registers in the background: until then the method is unknown.
	for deadline := time.Now().Add(30 * time.Second); ; {
		run, err = client.Submit(ctx, doc)
		if err == nil || !errors.Is(err, stellwerk.ErrInvalidArgument) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	done, err := client.Wait(ctx, run.GetRunId())
	if err != nil || done.GetState() != stellwerk.RunCompleted {
		t.Fatalf("%v %v", done, err)
	}
	var say struct{ Response string }
	if err := stellwerk.Result(stellwerk.FindTask(done, "say"), &say); err != nil || say.Response != "krewllets" {
		t.Errorf("say: %v %v", say, err)
	}
}
