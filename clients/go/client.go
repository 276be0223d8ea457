package stellwerk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	workflowv1 "stellwerk.dev/clients/go/gen/stellwerk/workflow/v1"
)

// DefaultAddress is the resolver's default address (STELLWERK_ADDRESS overrides it in Address).
const DefaultAddress = "127.0.0.1:50051"

// DefaultTimeout bounds a unary call whose context has no deadline.
const DefaultTimeout = 30 * time.Second

const (
	maxMessageBytes  = 64 << 20
	watchRetryPause  = 200 * time.Millisecond
	watchRetryLimit  = 5 * time.Second
	requestIDLetters = 16
)

// Address is STELLWERK_ADDRESS, or DefaultAddress when it is unset.
func Address() string {
	if a := os.Getenv("STELLWERK_ADDRESS"); a != "" {
		return a
	}
	return DefaultAddress
}

// Client talks to a resolver (WorkflowService). It is safe for concurrent use.
type Client struct {
	conn      *grpc.ClientConn
	workflows workflowv1.WorkflowServiceClient
	timeout   time.Duration
}

// Option configures Dial.
type Option func(*dialOptions)

type dialOptions struct {
	grpc    []grpc.DialOption
	timeout time.Duration
}

// WithDialOptions adds gRPC dial options (TLS credentials, interceptors, ...); the default is
// a plaintext connection.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *dialOptions) { o.grpc = append(o.grpc, opts...) }
}

// WithDefaultTimeout sets the deadline of unary calls whose context has none (DefaultTimeout).
func WithDefaultTimeout(d time.Duration) Option {
	return func(o *dialOptions) { o.timeout = d }
}

// Dial prepares a client for the resolver at address ("host:port"). Like grpc.NewClient it
// does not connect yet: the first call does, and fails with ErrUnavailable if nobody answers.
func Dial(address string, opts ...Option) (*Client, error) {
	o := dialOptions{timeout: DefaultTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	grpcOpts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessageBytes)),
	}, o.grpc...)
	conn, err := grpc.NewClient(address, grpcOpts...)
	if err != nil {
		return nil, fmt.Errorf("stellwerk: dial %s: %w", address, err)
	}
	return &Client{conn: conn, workflows: workflowv1.NewWorkflowServiceClient(conn), timeout: o.timeout}, nil
}

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// Workflows is the generated WorkflowService client, for calls this package does not wrap.
func (c *Client) Workflows() workflowv1.WorkflowServiceClient { return c.workflows }

func (c *Client) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.timeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// SubmitOption configures Submit and SubmitFile.
type SubmitOption func(*workflowv1.StartRunRequest)

// WithRequestID makes the submit idempotent: a retry with the same id returns the same run.
// Submit sets a random one when none is given, so its own retries never start two runs.
func WithRequestID(id string) SubmitOption {
	return func(r *workflowv1.StartRunRequest) { r.RequestId = id }
}

// AllowUnregistered accepts methods no executor (or worker) has registered yet.
func AllowUnregistered() SubmitOption {
	return func(r *workflowv1.StartRunRequest) { r.AllowUnregisteredMethods = true }
}

// Submit starts a run of a workflow given as a document (Gleitzeit YAML or JSON text).
func (c *Client) Submit(ctx context.Context, document string, opts ...SubmitOption) (*Run, error) {
	req := &workflowv1.StartRunRequest{Source: &workflowv1.StartRunRequest_Document{Document: document}}
	for _, opt := range opts {
		opt(req)
	}
	if req.RequestId == "" {
		req.RequestId = newRequestID()
	}
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.StartRun(ctx, req)
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply.GetRun(), nil
}

// SubmitFile starts a run of the workflow file at path (.yaml, .yml or .json).
func (c *Client) SubmitFile(ctx context.Context, path string, opts ...SubmitOption) (*Run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("stellwerk: %w", err)
	}
	format := ""
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		format = "json"
	case ".yaml", ".yml":
		format = "yaml"
	}
	return c.Submit(ctx, string(data), append([]SubmitOption{func(r *workflowv1.StartRunRequest) {
		r.DocumentFormat = format
	}}, opts...)...)
}

// Get returns a run with its tasks.
func (c *Client) Get(ctx context.Context, runID string) (*Run, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.GetRun(ctx, &workflowv1.GetRunRequest{
		RunId: runID, View: workflowv1.RunView_RUN_VIEW_FULL,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply.GetRun(), nil
}

// Cancel cancels a running run (idempotent) and returns it, CANCELLED. A run that ended
// COMPLETED or FAILED (or is COMPENSATING/COMPENSATED) fails with ErrFailedPrecondition.
func (c *Client) Cancel(ctx context.Context, runID string) (*Run, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.CancelRun(ctx, &workflowv1.CancelRunRequest{RunId: runID, RequestId: newRequestID()})
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply.GetRun(), nil
}

// Retry re-runs an ended run's unfinished part, and fromTasks with everything downstream of
// them; it returns the run, RUNNING again, its GetRestarts counted up. Runs that are running,
// COMPENSATING or COMPENSATED fail with ErrFailedPrecondition.
func (c *Client) Retry(ctx context.Context, runID string, fromTasks ...string) (*Run, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.RetryRun(ctx, &workflowv1.RetryRunRequest{
		RunId: runID, FromTaskIds: fromTasks, RequestId: newRequestID(),
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply.GetRun(), nil
}

// Validate checks a workflow document (YAML or JSON text) without running it: every problem
// found is in the answer's GetProblems (none: valid), with GetTaskCount. An invalid workflow is
// an answer here, not an error. allowUnregistered accepts methods no executor has registered.
func (c *Client) Validate(ctx context.Context, document string, allowUnregistered bool) (*Validation, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.ValidateWorkflow(ctx, &workflowv1.ValidateWorkflowRequest{
		Source:                   &workflowv1.ValidateWorkflowRequest_Document{Document: document},
		AllowUnregisteredMethods: allowUnregistered,
	})
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply, nil
}

// List yields runs newest first, without their tasks, fetching pages as the iteration goes;
// state RunUnspecified lists runs in any state. Each page has its own deadline (the client's
// default unless ctx has one). An error ends the sequence.
func (c *Client) List(ctx context.Context, state RunState) iter.Seq2[*Run, error] {
	return func(yield func(*Run, error) bool) {
		token := ""
		for {
			page, err := c.listPage(ctx, state, token)
			if err != nil {
				yield(nil, err)
				return
			}
			for _, run := range page.GetRuns() {
				if !yield(run, nil) {
					return
				}
			}
			if token = page.GetNextPageToken(); token == "" {
				return
			}
		}
	}
}

func (c *Client) listPage(ctx context.Context, state RunState, token string) (*workflowv1.ListRunsResponse, error) {
	ctx, cancel := c.bounded(ctx)
	defer cancel()
	reply, err := c.workflows.ListRuns(ctx, &workflowv1.ListRunsRequest{State: state, PageToken: token})
	if err != nil {
		return nil, fromRPC(err)
	}
	return reply, nil
}

// Update is one change of a watched run: the run (without tasks) and the task that changed,
// if one did.
type Update struct {
	Run  *Run
	Task *TaskRun
}

// Watch yields a run's changes until it ends (see Ended), or ctx is done: first its
// current state, then one update per change. A broken stream is reopened (the first message
// of a new one is the current state again), so changes may repeat but none ends the watch
// early. An error ends the sequence.
func (c *Client) Watch(ctx context.Context, runID string) iter.Seq2[Update, error] {
	return func(yield func(Update, error) bool) {
		pause := watchRetryPause
		for {
			stream, err := c.workflows.WatchRun(ctx, &workflowv1.WatchRunRequest{RunId: runID})
			for err == nil {
				var msg *workflowv1.WatchRunResponse
				msg, err = stream.Recv()
				if err != nil {
					break
				}
				pause = watchRetryPause
				if !yield(Update{Run: msg.GetRun(), Task: msg.GetTask()}, nil) {
					return
				}
			}
			if errors.Is(err, io.EOF) {
				return // the run ended
			}
			wrapped := fromRPC(err)
			if ctx.Err() != nil || !errors.Is(wrapped, ErrUnavailable) {
				yield(Update{}, wrapped)
				return
			}
			select { // the resolver went away: try again (another may answer)
			case <-ctx.Done():
				yield(Update{}, fromRPC(ctx.Err()))
				return
			case <-time.After(pause):
			}
			pause = min(2*pause, watchRetryLimit)
		}
	}
}

// Wait follows a run until it ends and returns it with its tasks. Bound it with ctx.
func (c *Client) Wait(ctx context.Context, runID string) (*Run, error) {
	for _, err := range c.Watch(ctx, runID) {
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.Get(ctx, runID)
}

func newRequestID() string {
	b := make([]byte, requestIDLetters)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
