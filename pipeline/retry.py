"""The one retry policy (tenacity) for every network step.

Errors say whether they are temporary (429, 5xx, resets, timeouts); the policy
reads that, waits exponentially with jitter, honours Retry-After, and gives up
after ``attempts`` with the last error (which names the registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from pipeline import log

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    max_retry_after_seconds: float = 120.0

    @classmethod
    def from_config(cls, cfg: Any) -> RetryPolicy:
        return cls(cfg.attempts, cfg.initial_seconds, cfg.max_seconds, cfg.max_retry_after_seconds)


def is_temporary(exc: BaseException) -> bool:
    return bool(getattr(exc, "temporary", False))


def _wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    backoff = tenacity.wait_random_exponential(multiplier=policy.initial_seconds, max=policy.max_seconds)

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), policy.max_retry_after_seconds)
        return backoff(state)

    return wait


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.get().warning("request.retried", attempt=state.attempt_number, error=str(exc),
                      wait_seconds=round(state.upcoming_sleep, 2))


def call(policy: RetryPolicy, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` under the policy; non-temporary errors are raised at once."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_wait(policy),
        retry=tenacity.retry_if_exception(is_temporary),
        before_sleep=_log_retry,
        reraise=True,
    )
    return retrying(fn, *args, **kwargs)
