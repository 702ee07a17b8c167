"""The one retry policy (tenacity) for every network step.

Errors say whether they are temporary (429, 5xx, resets, timeouts, truncated bodies); the
policy reads that, waits exponentially with jitter, honours Retry-After (seconds or an HTTP
date, already turned into seconds by the client), and gives up after ``attempts`` tries or
when ``budget_seconds`` (the longest one request keeps retrying) would be exceeded, with the
last error (which names the registry). A Retry-After longer than what is left of the budget
gives up at once instead of sleeping past it.

Every wait is logged as ``request.retried`` with the error, the status, the registry's
Retry-After and the seconds actually waited, so a run can be audited (the fault tests read
these events).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline import lazy, log

if TYPE_CHECKING:
    import tenacity
else:
    tenacity = lazy("tenacity")


T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 10
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0
    budget_seconds: float = 120.0

    @classmethod
    def from_config(cls, cfg: Any) -> RetryPolicy:
        return cls(cfg.attempts, cfg.initial_seconds, cfg.max_seconds, cfg.max_retry_after_seconds,
                   cfg.budget_seconds)


def is_temporary(exc: BaseException) -> bool:
    return bool(getattr(exc, "temporary", False))


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def _retry_after(state: tenacity.RetryCallState, policy: RetryPolicy) -> float | None:
    value = getattr(_exception(state), "retry_after", None)
    return None if value is None else min(float(value), policy.max_retry_after_seconds)


class _Budget:
    """What is left of ``budget_seconds``, counted from the end of the first failed attempt: a transfer that
    ran for minutes before it broke still gets the whole budget to resume or restart."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.first_failure: float | None = None

    def left(self, state: tenacity.RetryCallState) -> float:
        now = state.outcome_timestamp if state.outcome_timestamp is not None else state.start_time
        if self.first_failure is None:
            self.first_failure = now
        return self.policy.budget_seconds - (now - self.first_failure)


def _stop(policy: RetryPolicy, budget: _Budget) -> Callable[[tenacity.RetryCallState], bool]:
    def stop(state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= policy.attempts:
            return True
        left = budget.left(state)
        if left <= 0:
            return True
        retry_after = _retry_after(state, policy)
        return retry_after is not None and retry_after > left

    return stop


def _wait(policy: RetryPolicy, budget: _Budget) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_random_exponential(multiplier=policy.initial_seconds, max=policy.max_seconds)

    def wait(state: tenacity.RetryCallState) -> float:
        left = max(0.0, budget.left(state))
        retry_after = _retry_after(state, policy)
        return min(retry_after if retry_after is not None else backoff(state), left)

    return wait


def _log_retry(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = _exception(state)
        log.get().warning("request.retried", attempt=state.attempt_number, error=str(exc),
                          registry=getattr(exc, "registry", None), status=getattr(exc, "status", None),
                          retry_after=getattr(exc, "retry_after", None),
                          wait_seconds=round(state.upcoming_sleep, 3))

    return before_sleep


def call(policy: RetryPolicy, fn: Callable[..., T], *args: Any,
         retry_on: Callable[[BaseException], bool] = is_temporary, **kwargs: Any) -> T:
    """Run ``fn`` under the policy; errors ``retry_on`` does not accept (non-temporary ones) are raised at once.

    The error that ends the retries carries ``attempts_made`` (how many tries it took),
    so the caller's "gave up after N attempts" is true when the budget stopped it early.
    """
    budget = _Budget(policy)
    retrying = tenacity.Retrying(
        stop=_stop(policy, budget),
        wait=_wait(policy, budget),
        retry=tenacity.retry_if_exception(retry_on),
        before_sleep=_log_retry(policy),
        reraise=True,
    )
    try:
        return retrying(fn, *args, **kwargs)
    except BaseException as exc:
        if retry_on(exc):
            try:
                exc.attempts_made = retrying.statistics.get("attempt_number", policy.attempts)  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise


def attempts_made(exc: BaseException, policy: RetryPolicy) -> int:
    return int(getattr(exc, "attempts_made", policy.attempts))
