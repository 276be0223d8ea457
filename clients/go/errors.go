package stellwerk

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Kinds of errors, for errors.Is. An *Error matches the one of its gRPC code.
var (
	ErrInvalidArgument    = errors.New("stellwerk: invalid argument")
	ErrNotFound           = errors.New("stellwerk: not found")
	ErrAlreadyExists      = errors.New("stellwerk: already exists")
	ErrFailedPrecondition = errors.New("stellwerk: wrong state")
	ErrAborted            = errors.New("stellwerk: conflict")
	ErrUnavailable        = errors.New("stellwerk: unavailable")
	ErrDeadlineExceeded   = errors.New("stellwerk: deadline exceeded")
)

var kinds = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.NotFound:           ErrNotFound,
	codes.AlreadyExists:      ErrAlreadyExists,
	codes.FailedPrecondition: ErrFailedPrecondition,
	codes.Aborted:            ErrAborted,
	codes.Unavailable:        ErrUnavailable,
	codes.DeadlineExceeded:   ErrDeadlineExceeded,
}

// Violation is one problem of an INVALID_ARGUMENT error (google.rpc.BadRequest).
type Violation struct {
	Field       string
	Description string
}

// Error is a failed call: the gRPC code and message, and the rich details the server sends
// (google.rpc.ErrorInfo reason and metadata; google.rpc.BadRequest violations).
type Error struct {
	Code       codes.Code
	Message    string
	Reason     string            // ErrorInfo.reason, e.g. "WORKFLOW_INVALID", "NOT_FOUND"
	Domain     string            // ErrorInfo.domain, "stellwerk.dev"
	Metadata   map[string]string // ErrorInfo.metadata
	Violations []Violation       // BadRequest field violations (INVALID_ARGUMENT), every problem
	status     *status.Status
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stellwerk: %s: %s", e.Code, e.Message)
	for _, v := range e.Violations {
		fmt.Fprintf(&b, "\n  %s: %s", v.Field, v.Description)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrNotFound) and friends work, and also matches
// context.DeadlineExceeded and context.Canceled for the codes gRPC gives those.
func (e *Error) Is(target error) bool {
	if kind, ok := kinds[e.Code]; ok && kind == target {
		return true
	}
	switch target {
	case context.DeadlineExceeded:
		return e.Code == codes.DeadlineExceeded
	case context.Canceled:
		return e.Code == codes.Canceled
	}
	return false
}

// GRPCStatus returns the status the error was made from (status.FromError understands it).
func (e *Error) GRPCStatus() *status.Status { return e.status }

// fromRPC turns an error of a gRPC call into an *Error (nil stays nil; io.EOF is no RPC error).
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	out := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			out.Reason, out.Domain, out.Metadata = d.GetReason(), d.GetDomain(), d.GetMetadata()
		case *errdetails.BadRequest:
			for _, v := range d.GetFieldViolations() {
				out.Violations = append(out.Violations, Violation{v.GetField(), v.GetDescription()})
			}
		}
	}
	return out
}
