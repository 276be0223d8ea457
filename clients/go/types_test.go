package stellwerk

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestEndedKnowsEveryRunState(t *testing.T) {
	want := map[RunState]bool{
		RunUnspecified: false, RunRunning: false, RunCompensating: false,
		RunCompleted: true, RunFailed: true, RunCancelled: true, RunCompensated: true,
		RunState(99): false, // a state a newer server adds is not taken for an end
	}
	for state, ended := range want {
		if got := Ended(&Run{State: state}); got != ended {
			t.Errorf("Ended(%s) = %v", state, got)
		}
	}
	if Succeeded(&Run{State: RunCompensated}) || !Succeeded(&Run{State: RunCompleted}) {
		t.Error("only COMPLETED succeeded")
	}
}

func TestTaskEndedKnowsEveryTaskState(t *testing.T) {
	want := map[TaskState]bool{
		TaskUnspecified: false, TaskPending: false, TaskDispatched: false, TaskRunning: false,
		TaskRetryWait: false,
		TaskCompleted: true, TaskFailed: true, TaskBlocked: true, TaskSkipped: true, TaskCancelled: true,
		TaskState(99): false,
	}
	for state, ended := range want {
		if got := TaskEnded(&TaskRun{State: state}); got != ended {
			t.Errorf("TaskEnded(%s) = %v", state, got)
		}
	}
}

func TestResultsAndResultOfAStoredResult(t *testing.T) {
	run := &Run{Tasks: []*TaskRun{
		{TaskId: "a", State: TaskCompleted, ResultJson: `{"n": 12345678901234567890}`},
		{TaskId: "big", State: TaskCompleted, ResultSize: 5 << 20}, // stored out of line
		{TaskId: "skipped", State: TaskSkipped, Error: "broke"},
		{TaskId: "comp", State: TaskCompleted, ResultJson: `null`, Role: RoleCompensation},
	}}
	results := Results(run)
	if len(results) != 2 || string(results["a"]) != `{"n": 12345678901234567890}` || string(results["comp"]) != "null" {
		t.Errorf("results: %v", results)
	}
	var v any
	err := Result(FindTask(run, "big"), &v)
	if !errors.Is(err, ErrResultNotInline) {
		t.Errorf("a stored result: %v", err)
	}
	if err := Result(FindTask(run, "skipped"), &v); err == nil || errors.Is(err, ErrResultNotInline) {
		t.Errorf("no result: %v", err)
	}
	if FindTask(run, "comp").GetRole() != RoleCompensation || FindTask(run, "nope") != nil {
		t.Error("FindTask")
	}
}

func TestDuration(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	task := &TaskRun{DispatchTime: timestamppb.New(start)}
	if _, ok := Duration(task); ok {
		t.Error("no end yet")
	}
	task.EndTime = timestamppb.New(start.Add(1500 * time.Millisecond))
	if d, ok := Duration(task); !ok || d != 1500*time.Millisecond {
		t.Errorf("duration %v %v", d, ok)
	}
}

func TestBreakerStatesAreTheContracts(t *testing.T) {
	b := &CircuitBreaker{Scope: "method:x/y", State: BreakerOpen, Failures: 3}
	if b.GetState().String() != "BREAKER_STATE_OPEN" || BreakerHalfOpen.String() != "BREAKER_STATE_HALF_OPEN" ||
		BreakerClosed.String() != "BREAKER_STATE_CLOSED" {
		t.Error(b)
	}
}
