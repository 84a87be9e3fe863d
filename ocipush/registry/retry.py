"""When and how long to wait before trying a request again.

Transient: no answer at all (connection refused or reset, timeout), and the statuses
servers use for "not now": 408, 429, 500, 502, 503, 504.  Waits grow exponentially with
full jitter (so parallel uploads do not retry in lockstep), capped, and a ``Retry-After``
from the server wins when it asks for longer — up to four times the cap, never more:
a server does not get to park us for an hour.  Every wait is a finite number of seconds
from 0 to that bound, whatever the policy's numbers or the server's header.

One budget, one helper.  ``--retry N`` is N retries *per request*: a ``Budget`` counts them,
and ``Budget.spend`` is the one place that decides "again or give up" and waits.
``RetryPolicy.run`` is the loop for a request that is simply sent again (``HEAD``, ``POST``,
the manifest and the commit ``PUT``); the ping and the chunk loop spend a ``Budget`` in
their own loops, the chunk's shared between its resends and the status ``GET``s that ask
where the upload stands, so no request has a budget nested in another's.  Starting a
blob over is the uploader's business (``BlobUploader.upload``): it gets N restarts, each
of whose requests has its own budget again.

The sleep and the clock are injectable, so tests see the waits without waiting.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

import attrs

from ..errors import AuthenticationError, RegistryError, UsageError
from . import headers

__all__ = ["TRANSIENT_STATUSES", "Budget", "RetryPolicy", "is_transient", "retry_after"]

T = TypeVar("T")
OnRetry = Callable[[RegistryError], None]

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_EXPONENT = 62  # 2**62 × any delay is past every cap; a larger exponent only risks overflow


def _seconds(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    """A wait is a finite, non-negative number of seconds (``--retry-delay nan`` is not)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"retry {attribute.name.replace('_', ' ')}: expected a finite number of seconds ≥ 0, "
                         f"not {value!r}")


def _count(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise UsageError(f"retry {attribute.name}: expected a whole number ≥ 0, not {value!r}")


def is_transient(error: BaseException) -> bool:
    if isinstance(error, AuthenticationError) or not isinstance(error, RegistryError):
        return False
    return error.status is None or error.status in TRANSIENT_STATUSES


@attrs.frozen
class RetryPolicy:
    # Retries after the first try, per request (podman's --retry).
    attempts: int = attrs.field(default=3, validator=_count)
    # The first wait, doubled each time (podman's --retry-delay).
    delay: float = attrs.field(default=1.0, validator=_seconds)
    max_delay: float = attrs.field(default=30.0, validator=_seconds)
    # How to wait and what time it is (for an HTTP-date Retry-After): injectable for tests.
    sleeper: Callable[[float], None] = attrs.field(default=time.sleep, eq=False, repr=False)
    clock: Callable[[], float] = attrs.field(default=time.time, eq=False, repr=False)

    def wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based): from 0 to
        ``4 × max_delay``, finite."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        backoff = min(self.max_delay, self.delay * 2.0**exponent)
        pause = random.uniform(backoff / 2, backoff)
        asked = retry_after(error, self.clock())
        return max(pause, min(asked, self.max_delay * 4)) if asked is not None else pause

    def sleep(self, attempt: int, error: BaseException | None = None) -> None:
        self.sleeper(self.wait(attempt, error))

    def budget(self) -> Budget:
        """A fresh budget of ``attempts`` retries, for one request (or one chunk)."""
        return Budget(self)

    def run(
        self,
        attempt: Callable[[], T],
        *,
        on_retry: OnRetry | None = None,
        budget: Budget | None = None,
    ) -> T:
        """``attempt()`` until it returns, retrying a ``RegistryError`` that ``is_transient``
        while ``budget`` (default: a fresh one) lasts; anything else, or the last error, raises."""
        budget = self.budget() if budget is None else budget
        while True:
            try:
                return attempt()
            except RegistryError as e:
                if not is_transient(e) or not budget.spend(e, on_retry):
                    raise


@attrs.define
class Budget:
    """The retries one request has left (or one blob's restarts).  Shared by the requests
    that make one step (a chunk's resends and its status ``GET``s), never nested: a retry
    is one retry, whichever request it resends."""

    policy: RetryPolicy
    used: int = 0

    def spend(self, error: RegistryError, on_retry: OnRetry | None = None) -> bool:
        """Count one retry after ``error`` and wait for it (``Retry-After`` honoured, capped);
        False, without waiting, when the budget is spent: the caller raises ``error``."""
        if self.used >= self.policy.attempts:
            return False
        self.used += 1
        if on_retry is not None:
            on_retry(error)
        self.policy.sleep(self.used, error)
        return True


def retry_after(error: BaseException | None, now: float | None = None) -> float | None:
    """The seconds the error's ``Retry-After`` asks for (see ``headers.retry_after``):
    None when absent or unreadable, which leaves the wait to our own backoff."""
    value = getattr(error, "retry_after", None)
    if not isinstance(value, str):
        return None
    return headers.retry_after(value, time.time() if now is None else now)
