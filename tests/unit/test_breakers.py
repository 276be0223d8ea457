"""The circuit breakers' state machine, with an injected clock (core/breakers.py), the settings
that configure them, and how ExplainRun names the tasks they hold (resolver/_breakers.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from stellwerk.core.breakers import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    breaker_key,
    closed_by_success,
    method_scope,
    opened_by_failure,
    run_scope,
    scope_of_breaker_key,
    trial_taken,
)
from stellwerk.core.records import TaskRecord, TaskState
from stellwerk.core.settings import Settings
from stellwerk.resolver._breakers import held_by_breakers
from stellwerk.resolver._explain import Explanation, Wait

POLICY = BreakerPolicy(threshold=3, window=10.0, cooldown=5.0)
SCOPE = method_scope("mcp/tool.echo")


def _fail(breaker: Breaker | None, failure: str, now: float) -> Breaker | None:
    return opened_by_failure(breaker, SCOPE, failure, POLICY, now, error="boom")


def _opened_at(now: float) -> Breaker:
    breaker = None
    for i in range(3):
        breaker = _fail(breaker, f"f{i}", now) or breaker
    assert breaker is not None and breaker.open
    return breaker


def test_opens_after_threshold_failures_within_the_window() -> None:
    first = _fail(None, "a", 100.0)
    assert first is not None and first.state(100.0) is BreakerState.CLOSED
    second = _fail(first, "b", 101.0)
    assert second is not None and second.state(101.0) is BreakerState.CLOSED
    third = _fail(second, "c", 102.0)
    assert third is not None
    assert third.state(102.0) is BreakerState.OPEN
    assert third.retry_at == 107.0 and third.changed_at == 102.0
    assert len(third.failures) == 3 and third.last_error == "boom"


def test_failures_older_than_the_window_do_not_count() -> None:
    breaker = _fail(_fail(None, "a", 100.0), "b", 101.0)
    late = _fail(breaker, "c", 111.5)  # "a" and "b" left the 10 s window
    assert late is not None and late.state(111.5) is BreakerState.CLOSED
    assert [f for _, f in late.failures] == ["c"]


def test_a_repeated_failure_changes_nothing() -> None:
    breaker = _fail(_fail(None, "a", 100.0), "b", 101.0)
    assert _fail(breaker, "a", 102.0) is None  # a redelivered outcome of the same attempt


def test_half_open_after_the_cool_down_and_failures_while_open_are_ignored() -> None:
    breaker = _opened_at(100.0)
    assert breaker.state(104.9) is BreakerState.OPEN
    assert _fail(breaker, "late", 104.0) is None  # started before it opened: proves nothing
    assert breaker.state(105.0) is BreakerState.HALF_OPEN


def test_a_failure_while_half_open_opens_it_again() -> None:
    breaker = _opened_at(100.0)
    again = _fail(breaker, "trial", 106.0)
    assert again is not None
    assert again.state(106.0) is BreakerState.OPEN
    assert again.retry_at == 111.0 and again.changed_at == 106.0 and again.trial is None


def test_a_success_closes_only_an_open_breaker() -> None:
    assert closed_by_success(_opened_at(100.0))
    counting = _fail(None, "a", 100.0)
    assert not closed_by_success(counting)  # CLOSED keeps its window
    assert not closed_by_success(None)


def test_one_trial_at_a_time_while_half_open() -> None:
    breaker = _opened_at(100.0)
    assert trial_taken(breaker, "r/t/1", 104.0) is None  # still OPEN
    trial = trial_taken(breaker, "r/t/1", 105.0)
    assert trial is not None and trial.trial == "r/t/1" and trial.trial_out(105.5)
    assert trial_taken(trial, "r/u/1", 106.0) is None  # another attempt waits
    assert trial_taken(trial, "r/t/1", 106.0) is not None  # the trial's redelivery goes
    lapsed = trial_taken(trial, "r/u/1", 110.1)  # the trial never reported: another may go
    assert lapsed is not None and lapsed.trial == "r/u/1"


def test_threshold_zero_turns_the_breaker_off() -> None:
    off = BreakerPolicy(threshold=0, window=10.0, cooldown=5.0)
    assert not off.enabled
    assert opened_by_failure(None, SCOPE, "a", off, 100.0) is None


@pytest.mark.parametrize(
    ("threshold", "window", "cooldown"), [(-1, 10.0, 5.0), (3, 0.0, 5.0), (3, 10.0, -1.0)]
)
def test_a_policy_out_of_bounds_is_refused(threshold: int, window: float, cooldown: float) -> None:
    with pytest.raises(ValueError, match="out of bounds"):
        BreakerPolicy(threshold, window, cooldown)


def test_the_record_round_trips_and_garbage_is_refused() -> None:
    breaker = trial_taken(_opened_at(100.0), "r/t/1", 105.0)
    assert breaker is not None
    assert Breaker.from_bytes(breaker.to_bytes()) == breaker
    with pytest.raises(ValueError, match="not a breaker record"):
        Breaker.from_bytes(b'{"state": "OPEN"}')
    with pytest.raises(ValueError, match="not a breaker record"):
        Breaker.from_bytes(b"\xff")


@pytest.mark.parametrize(
    "scope", [method_scope("mcp/tool.echo"), method_scope("a.b c"), run_scope("0" * 22)]
)
def test_keys_are_valid_and_name_their_scope(scope: str) -> None:
    key = breaker_key(scope)
    assert key.startswith("breaker.") and " " not in key and key.count(".") == 2
    assert scope_of_breaker_key(key) == scope


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STELLWERK_BREAKER_METHOD_THRESHOLD", "-1"),
        ("STELLWERK_BREAKER_METHOD_THRESHOLD", "many"),
        ("STELLWERK_BREAKER_METHOD_WINDOW", "0"),
        ("STELLWERK_BREAKER_METHOD_COOLDOWN", "-5"),
        ("STELLWERK_BREAKER_METHOD_COOLDOWN", "soon"),
        ("STELLWERK_BREAKER_RUN_THRESHOLD", "1e9"),
        ("STELLWERK_BREAKER_RUN_WINDOW", "100000"),
        ("STELLWERK_BREAKER_RUN_COOLDOWN", "0"),
        ("STELLWERK_RESOLUTION_ATTEMPTS", "0"),
        ("STELLWERK_RESOLUTION_ATTEMPTS", "11"),
    ],
)
def test_malformed_breaker_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert variable.removeprefix("STELLWERK_").lower() in str(caught.value)


def test_breaker_settings_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLWERK_BREAKER_METHOD_THRESHOLD", "4")
    monkeypatch.setenv("STELLWERK_BREAKER_METHOD_COOLDOWN", "2.5")
    settings = Settings()
    assert settings.breaker_method_threshold == 4
    assert settings.breaker_method_cooldown == 2.5
    assert settings.breaker_run_threshold == 5  # the default


def _task(task_id: str, method: str = "mcp/tool.echo") -> TaskRecord:
    return TaskRecord(
        run_id="0" * 22,
        id=task_id,
        name=task_id,
        method=method,
        params={},
        dependencies=[],
        dependents=[],
        refs={},
        sink_index=0,
        state=TaskState.DISPATCHED,
        attempt=1,
    )


def test_explain_names_the_tasks_an_open_breaker_holds() -> None:
    tasks = [_task("held"), _task("other", method="test/noop")]
    queued = [
        Explanation("held", TaskState.DISPATCHED, Wait.QUEUED, "queued"),
        Explanation("other", TaskState.DISPATCHED, Wait.QUEUED, "queued"),
    ]
    breaker = _opened_at(100.0)
    explained = held_by_breakers(queued, tasks, [breaker], now=101.0)
    assert explained[0].reason is Wait.BREAKER and explained[0].until == 105.0
    assert "open breaker of mcp/tool.echo" in explained[0].summary
    assert explained[1].reason is Wait.QUEUED  # another method: not held
    after = held_by_breakers(queued, tasks, [breaker], now=106.0)  # HALF_OPEN, no trial yet
    assert after[0].reason is Wait.QUEUED
