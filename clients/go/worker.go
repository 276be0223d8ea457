package stellwerk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	executionv1 "stellwerk.dev/clients/go/gen/stellwerk/execution/v1"
)

// DefaultExecutorAddress is an executor's default address (STELLWERK_EXECUTOR_ADDRESS
// overrides it in ExecutorAddress); workers connect to executors, not to the resolver.
const DefaultExecutorAddress = "127.0.0.1:50052"

// SDK names this library in worker registrations.
const SDK = "stellwerk-go/0.1.0"

// ExecutorAddress is STELLWERK_EXECUTOR_ADDRESS, or DefaultExecutorAddress when unset.
func ExecutorAddress() string {
	if a := os.Getenv("STELLWERK_EXECUTOR_ADDRESS"); a != "" {
		return a
	}
	return DefaultExecutorAddress
}

// Task is one attempt of one task, as a handler receives it.
type Task struct {
	RunID  string
	TaskID string
	Method string
	// Attempt counts from 1.
	Attempt int32
	// IdempotencyKey is stable for this attempt whatever crashes happen: pass it on to your
	// own side effects (a re-run after a crash gets the same key).
	IdempotencyKey string
	// Params is the task's parameters as JSON, references already substituted.
	Params json.RawMessage
}

// Decode unmarshals the parameters into v.
func (t *Task) Decode(v any) error { return json.Unmarshal(t.Params, v) }

// Handler runs one attempt. Its result is marshalled to JSON and becomes the task's result;
// an error fails the attempt with its message. ctx is cancelled when the executor gives the
// attempt up (its claim lapsed, the task's timeout passed) or the worker stops.
type Handler func(ctx context.Context, task *Task) (any, error)

// Worker runs tasks of the methods it has handlers for, for one executor. Register handlers,
// then call Run.
type Worker struct {
	address     string
	id          string
	concurrency int
	logger      *slog.Logger
	dialOptions []grpc.DialOption
	handlers    map[string]Handler
}

// WorkerOption configures NewWorker.
type WorkerOption func(*Worker)

// WithWorkerID names the worker in logs and registrations (default: the executor makes one).
func WithWorkerID(id string) WorkerOption { return func(w *Worker) { w.id = id } }

// WithConcurrency sets how many attempts run at once (default 1).
func WithConcurrency(n int) WorkerOption { return func(w *Worker) { w.concurrency = n } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) WorkerOption { return func(w *Worker) { w.logger = l } }

// WithWorkerDialOptions adds gRPC dial options (default: plaintext).
func WithWorkerDialOptions(opts ...grpc.DialOption) WorkerOption {
	return func(w *Worker) { w.dialOptions = append(w.dialOptions, opts...) }
}

// NewWorker prepares a worker for the executor at address ("host:port").
func NewWorker(address string, opts ...WorkerOption) *Worker {
	w := &Worker{address: address, concurrency: 1, logger: slog.Default(), handlers: map[string]Handler{}}
	for _, opt := range opts {
		opt(w)
	}
	return w
}

// RegisterHandler makes the worker serve method (e.g. "shop/charge") with fn. Call it before
// Run; registering a method twice panics.
func (w *Worker) RegisterHandler(method string, fn Handler) {
	if _, dup := w.handlers[method]; dup {
		panic(fmt.Sprintf("stellwerk: handler for %q registered twice", method))
	}
	w.handlers[method] = fn
}

// Run serves until ctx is done: it connects, registers, runs attempts, and reconnects with
// backoff when the stream breaks (the attempts it held then go to other workers). It returns
// nil when ctx ends, or the error of a registration the executor refuses (ErrInvalidArgument,
// ErrFailedPrecondition), which retrying cannot fix.
func (w *Worker) Run(ctx context.Context) error {
	if len(w.handlers) == 0 {
		return errors.New("stellwerk: no handlers registered")
	}
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes))}, w.dialOptions...)
	conn, err := grpc.NewClient(w.address, opts...)
	if err != nil {
		return fmt.Errorf("stellwerk: dial %s: %w", w.address, err)
	}
	defer conn.Close()
	client := executionv1.NewWorkerServiceClient(conn)
	pause := 100 * time.Millisecond
	for {
		registered, err := w.session(ctx, client)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrInvalidArgument) || errors.Is(err, ErrFailedPrecondition) {
			return err
		}
		if registered {
			pause = 100 * time.Millisecond
		}
		w.logger.Warn("stellwerk worker: session ended; reconnecting", "error", err, "in", pause)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(pause):
		}
		pause = min(2*pause, 5*time.Second)
	}
}

// session runs one Connect stream; registered tells whether it got as far as registering.
func (w *Worker) session(ctx context.Context, client executionv1.WorkerServiceClient) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Connect(ctx)
	if err != nil {
		return false, fromRPC(err)
	}
	methods := make([]string, 0, len(w.handlers))
	for m := range w.handlers {
		methods = append(methods, m)
	}
	var sendMu sync.Mutex
	send := func(req *executionv1.ConnectRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(req)
	}
	err = send(&executionv1.ConnectRequest{Message: &executionv1.ConnectRequest_Register{
		Register: &executionv1.WorkerRegistration{
			WorkerId: w.id, Methods: methods, Concurrency: int32(w.concurrency), Sdk: SDK,
		}}})
	if err != nil {
		return false, fromRPC(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, fromRPC(err)
	}
	reg := first.GetRegistered()
	if reg == nil {
		return false, errors.New("stellwerk: the executor did not answer the registration")
	}
	w.logger.Info("stellwerk worker: registered", "executor", reg.GetExecutorId(),
		"worker", reg.GetWorkerId(), "methods", methods)

	interval := reg.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = time.Second
	}
	go func() { // heartbeats, whatever the handlers do
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				if send(&executionv1.ConnectRequest{Message: &executionv1.ConnectRequest_Heartbeat{
					Heartbeat: &executionv1.WorkerHeartbeat{}}}) != nil {
					return
				}
			}
		}
	}()

	var mu sync.Mutex
	running := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		msg, err := stream.Recv()
		if err != nil {
			cancel() // every running attempt is lost with the session
			return true, fromRPC(err)
		}
		switch m := msg.GetMessage().(type) {
		case *executionv1.ConnectResponse_Task:
			taskCtx, taskCancel := context.WithCancel(ctx)
			if d := m.Task.GetTimeout(); d != nil {
				taskCtx, taskCancel = context.WithTimeout(ctx, d.AsDuration())
			}
			mu.Lock()
			running[m.Task.GetTaskToken()] = taskCancel
			mu.Unlock()
			wg.Add(1)
			go func(t *executionv1.WorkerTask) {
				defer wg.Done()
				defer func() {
					mu.Lock()
					delete(running, t.GetTaskToken())
					mu.Unlock()
					taskCancel()
				}()
				if err := send(w.execute(taskCtx, t)); err != nil {
					cancel()
				}
			}(m.Task)
		case *executionv1.ConnectResponse_Cancellation:
			mu.Lock()
			if stop, ok := running[m.Cancellation.GetTaskToken()]; ok {
				stop()
			}
			mu.Unlock()
		}
	}
}

// execute runs the handler of one attempt and builds the answer.
func (w *Worker) execute(ctx context.Context, t *executionv1.WorkerTask) (req *executionv1.ConnectRequest) {
	token := t.GetTaskToken()
	fail := func(message string) *executionv1.ConnectRequest {
		return &executionv1.ConnectRequest{Message: &executionv1.ConnectRequest_Failure{
			Failure: &executionv1.TaskFailure{TaskToken: token, Message: message}}}
	}
	handler, ok := w.handlers[t.GetMethod()]
	if !ok {
		return fail(fmt.Sprintf("this worker has no handler for %s", t.GetMethod()))
	}
	defer func() { // a handler that panics fails its task, not the worker
		if p := recover(); p != nil {
			req = fail(fmt.Sprintf("handler panicked: %v", p))
		}
	}()
	task := &Task{
		RunID: t.GetRunId(), TaskID: t.GetTaskId(), Method: t.GetMethod(), Attempt: t.GetAttempt(),
		IdempotencyKey: t.GetIdempotencyKey(), Params: json.RawMessage(t.GetParamsJson()),
	}
	out, err := handler(ctx, task)
	if err != nil {
		return fail(err.Error())
	}
	data, err := json.Marshal(out)
	if err != nil {
		return fail(fmt.Sprintf("result is not JSON: %v", err))
	}
	return &executionv1.ConnectRequest{Message: &executionv1.ConnectRequest_Result{
		Result: &executionv1.TaskResult{TaskToken: token, ResultJson: string(data)}}}
}
