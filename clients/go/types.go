package stellwerk

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	workflowv1 "stellwerk.dev/clients/go/gen/stellwerk/workflow/v1"
)

// The contract's messages, re-exported so most programs import this package only. Every
// field of the contract is on them (GetRestarts, GetBreakers, GetRole, GetResultSize,
// GetAttemptHistory, GetRetryTime, ...); the functions below add what the Python client's
// typed results offer on top (Ended, TaskEnded, Results, Duration, Result).
type (
	Run            = workflowv1.Run
	TaskRun        = workflowv1.TaskRun
	TaskAttempt    = workflowv1.TaskAttempt
	CircuitBreaker = workflowv1.CircuitBreaker
	Checkpoint     = workflowv1.Checkpoint
	// Validation is Validate's answer: GetProblems (none: valid) and GetTaskCount.
	Validation        = workflowv1.ValidateWorkflowResponse
	ValidationProblem = workflowv1.ValidationProblem
	RunState          = workflowv1.RunState
	TaskState         = workflowv1.TaskState
	BreakerState      = workflowv1.BreakerState
)

// Run states. A state a newer server adds reads as its number, never as ended.
const (
	RunUnspecified  = workflowv1.RunState_RUN_STATE_UNSPECIFIED
	RunRunning      = workflowv1.RunState_RUN_STATE_RUNNING
	RunCompleted    = workflowv1.RunState_RUN_STATE_COMPLETED
	RunFailed       = workflowv1.RunState_RUN_STATE_FAILED
	RunCancelled    = workflowv1.RunState_RUN_STATE_CANCELLED
	RunCompensating = workflowv1.RunState_RUN_STATE_COMPENSATING // a task failed; compensations run
	RunCompensated  = workflowv1.RunState_RUN_STATE_COMPENSATED  // the compensations ran; ended
)

// Task states.
const (
	TaskUnspecified = workflowv1.TaskState_TASK_STATE_UNSPECIFIED
	TaskPending     = workflowv1.TaskState_TASK_STATE_PENDING
	TaskDispatched  = workflowv1.TaskState_TASK_STATE_DISPATCHED
	TaskRunning     = workflowv1.TaskState_TASK_STATE_RUNNING
	TaskRetryWait   = workflowv1.TaskState_TASK_STATE_RETRY_WAIT // next attempt due at GetRetryTime
	TaskCompleted   = workflowv1.TaskState_TASK_STATE_COMPLETED
	TaskFailed      = workflowv1.TaskState_TASK_STATE_FAILED
	TaskBlocked     = workflowv1.TaskState_TASK_STATE_BLOCKED
	TaskSkipped     = workflowv1.TaskState_TASK_STATE_SKIPPED // failed under on_failure skip
	TaskCancelled   = workflowv1.TaskState_TASK_STATE_CANCELLED
)

// Circuit breaker states (Run.GetBreakers lists those that are not closed).
const (
	BreakerClosed   = workflowv1.BreakerState_BREAKER_STATE_CLOSED
	BreakerOpen     = workflowv1.BreakerState_BREAKER_STATE_OPEN // calls wait until GetRetryTime
	BreakerHalfOpen = workflowv1.BreakerState_BREAKER_STATE_HALF_OPEN
)

// Task roles (TaskRun.GetRole): a task that runs only on a failure path.
const (
	RoleNormal       = ""
	RoleAlternative  = "alternative"
	RoleCompensation = "compensation"
)

// ErrResultNotInline is returned by Result for a result stored out of line that the response
// did not carry (WatchRun never does; GetRun only while the response stays within its budget):
// TaskRun.GetResultSize gives its size. Read the run again with Get to receive it.
var ErrResultNotInline = errors.New("stellwerk: result stored out of line, not in this response")

// Ended tells whether a run has ended: COMPLETED, FAILED, CANCELLED or COMPENSATED
// (COMPENSATING has not: its compensation tasks are still running).
func Ended(run *Run) bool {
	switch run.GetState() {
	case RunCompleted, RunFailed, RunCancelled, RunCompensated:
		return true
	}
	return false
}

// Succeeded tells whether a run ended COMPLETED. A COMPENSATED run ended after a failure.
func Succeeded(run *Run) bool { return run.GetState() == RunCompleted }

// TaskEnded tells whether a task is settled and will not run again: COMPLETED, FAILED,
// BLOCKED, SKIPPED or CANCELLED (RETRY_WAIT has not: its next attempt is due).
func TaskEnded(task *TaskRun) bool {
	switch task.GetState() {
	case TaskCompleted, TaskFailed, TaskBlocked, TaskSkipped, TaskCancelled:
		return true
	}
	return false
}

// Result decodes a task's result (JSON text) into v. Numbers keep their exact value when v
// holds json.Number or concrete integer types. A result stored out of line and not carried
// by this response fails with ErrResultNotInline.
func Result(task *TaskRun, v any) error {
	if task.GetResultJson() == "" {
		if task.GetResultSize() > 0 {
			return fmt.Errorf("%w: task %q, %d bytes", ErrResultNotInline, task.GetTaskId(), task.GetResultSize())
		}
		return fmt.Errorf("stellwerk: task %q has no result (state %s)", task.GetTaskId(), task.GetState())
	}
	return json.Unmarshal([]byte(task.GetResultJson()), v)
}

// Results returns the result of every COMPLETED task by task id, as raw JSON (decode each
// with json.Unmarshal). A result stored out of line and not carried by the response is left
// out; its task's GetResultSize tells it is there.
func Results(run *Run) map[string]json.RawMessage {
	results := make(map[string]json.RawMessage)
	for _, t := range run.GetTasks() {
		if t.GetState() == TaskCompleted && t.GetResultJson() != "" {
			results[t.GetTaskId()] = json.RawMessage(t.GetResultJson())
		}
	}
	return results
}

// FindTask finds a task of a run by id; nil if the run has none of that id (or was read without tasks).
func FindTask(run *Run, taskID string) *TaskRun {
	for _, t := range run.GetTasks() {
		if t.GetTaskId() == taskID {
			return t
		}
	}
	return nil
}

// Duration is the time from a task's latest dispatch to its end; false until both are known.
func Duration(task *TaskRun) (time.Duration, bool) {
	if task.GetDispatchTime() == nil || task.GetEndTime() == nil {
		return 0, false
	}
	return task.GetEndTime().AsTime().Sub(task.GetDispatchTime().AsTime()), true
}
