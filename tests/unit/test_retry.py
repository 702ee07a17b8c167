"""The one retry policy: attempts, the per-request budget, Retry-After, and the waits it logs."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from pipeline import retry
from pipeline.retry import RetryPolicy


class Temporary(Exception):
    temporary = True

    def __init__(self, retry_after: float | None = None, status: int = 503) -> None:
        super().__init__(f"server error {status}")
        self.retry_after = retry_after
        self.status = status
        self.registry = "ghcr"


def flaky(failures: list[BaseException]):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return "ok"

    return fn, calls


def test_temporary_errors_are_retried_and_each_wait_is_logged(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    fn, calls = flaky([Temporary(), Temporary(retry_after=2.0, status=429)])
    with capture_logs() as logs:
        assert retry.call(RetryPolicy(attempts=5, initial_seconds=0.01, max_seconds=0.02), fn) == "ok"
    waits = [e for e in logs if e["event"] == "request.retried"]
    assert calls["n"] == 3 and len(waits) == 2
    assert waits[1]["retry_after"] == 2.0 and waits[1]["wait_seconds"] == 2.0 and waits[1]["status"] == 429
    assert waits[0]["wait_seconds"] <= 0.02 and waits[0]["registry"] == "ghcr"


def test_a_final_error_is_not_retried():
    fn, calls = flaky([ValueError("no")])
    with pytest.raises(ValueError):
        retry.call(RetryPolicy(attempts=5), fn)
    assert calls["n"] == 1


def test_attempts_bound_the_tries_and_the_error_says_how_many(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    fn, calls = flaky([Temporary() for _ in range(10)])
    policy = RetryPolicy(attempts=3, initial_seconds=0.001, max_seconds=0.001)
    with pytest.raises(Temporary) as exc:
        retry.call(policy, fn)
    assert calls["n"] == 3 and retry.attempts_made(exc.value, policy) == 3


def test_a_retry_after_longer_than_the_budget_left_gives_up_at_once(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    fn, calls = flaky([Temporary(retry_after=30.0, status=429) for _ in range(5)])
    policy = RetryPolicy(attempts=10, budget_seconds=10.0)
    with pytest.raises(Temporary) as exc:
        retry.call(policy, fn)
    assert calls["n"] == 1 and slept == [] and retry.attempts_made(exc.value, policy) == 1


def test_waits_never_run_past_the_budget(monkeypatch):
    clock = {"t": 0.0}
    monkeypatch.setattr("time.sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    monkeypatch.setattr("time.monotonic", lambda: clock["t"])
    fn, calls = flaky([Temporary() for _ in range(100)])
    policy = RetryPolicy(attempts=100, initial_seconds=1.0, max_seconds=4.0, budget_seconds=10.0)
    with pytest.raises(Temporary):
        retry.call(policy, fn)
    assert clock["t"] <= 10.0 + 1e-9 and calls["n"] >= 3


def test_the_budget_counts_from_the_first_failure_not_from_a_long_first_try(monkeypatch):
    """A 10-minute upload that breaks still gets the whole budget to resume (a 120 s budget counted from the
    start would end every retry of a long transfer at once)."""
    clock = {"t": 0.0}
    monkeypatch.setattr("time.sleep", lambda s: clock.__setitem__("t", clock["t"] + s))
    monkeypatch.setattr("time.monotonic", lambda: clock["t"])
    calls = {"n": 0}

    def long_transfer_then_quick_failures() -> str:
        calls["n"] += 1
        clock["t"] += 600.0 if calls["n"] == 1 else 0.0
        if calls["n"] < 4:
            raise Temporary()
        return "resumed"

    policy = RetryPolicy(attempts=10, initial_seconds=1.0, max_seconds=2.0, budget_seconds=120.0)
    assert retry.call(policy, long_transfer_then_quick_failures) == "resumed"
    assert calls["n"] == 4
