package stellwerk

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestRichStatusBecomesATypedError(t *testing.T) {
	st, err := status.New(codes.InvalidArgument, "workflow is invalid").WithDetails(
		&errdetails.ErrorInfo{Reason: "WORKFLOW_INVALID", Domain: "stellwerk.dev",
			Metadata: map[string]string{"problem_count": "2"}},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "tasks[a].method", Description: "unknown method"},
			{Field: "tasks[b].dependencies", Description: "cycle"},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	got := fromRPC(st.Err())
	var serr *Error
	if !errors.As(got, &serr) {
		t.Fatalf("not an *Error: %T", got)
	}
	if !errors.Is(got, ErrInvalidArgument) || errors.Is(got, ErrNotFound) {
		t.Errorf("kind: %v", got)
	}
	if serr.Reason != "WORKFLOW_INVALID" || serr.Metadata["problem_count"] != "2" || len(serr.Violations) != 2 {
		t.Errorf("details: %+v", serr)
	}
	if serr.Violations[1] != (Violation{"tasks[b].dependencies", "cycle"}) {
		t.Errorf("violation: %+v", serr.Violations[1])
	}
	if s, ok := status.FromError(got); !ok || s.Code() != codes.InvalidArgument {
		t.Errorf("status.FromError: %v", s)
	}
}

func TestDeadlineMatchesTheContextError(t *testing.T) {
	got := fromRPC(status.Error(codes.DeadlineExceeded, "late"))
	if !errors.Is(got, context.DeadlineExceeded) || !errors.Is(got, ErrDeadlineExceeded) {
		t.Errorf("%v", got)
	}
	if fromRPC(nil) != nil {
		t.Error("nil must stay nil")
	}
}
