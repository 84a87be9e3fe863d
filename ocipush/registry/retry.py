"""When and how long to wait before trying a request again.

Transient: no answer at all (connection refused or reset, timeout), and the statuses
servers use for "not now": 408, 429, 500, 502, 503, 504.  Waits grow exponentially with
full jitter (so parallel uploads do not retry in lockstep), capped, and a ``Retry-After``
from the server wins when it asks for longer — up to four times the cap, never more:
a server does not get to park us for an hour.  Every wait is a finite number of seconds
from 0 to that bound, whatever the policy's numbers or the server's header.
"""

from __future__ import annotations

import math
import random
import time

import attrs

from ..errors import AuthenticationError, RegistryError, UsageError
from . import headers

__all__ = ["TRANSIENT_STATUSES", "RetryPolicy", "is_transient", "retry_after"]

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_EXPONENT = 62  # 2**62 × any delay is past every cap; a larger exponent only risks overflow


def _seconds(instance: object, attribute: attrs.Attribute, value: float) -> None:
    """A wait is a finite, non-negative number of seconds (``--retry-delay nan`` is not)."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UsageError(f"retry {attribute.name.replace('_', ' ')}: expected a finite number of seconds ≥ 0, "
                         f"not {value!r}")


def _count(instance: object, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or value < 0:
        raise UsageError(f"retry {attribute.name}: expected a whole number ≥ 0, not {value!r}")


@attrs.frozen
class RetryPolicy:
    # Retries after the first try, per request (podman's --retry).
    attempts: int = attrs.field(default=3, validator=_count)
    # The first wait, doubled each time (podman's --retry-delay).
    delay: float = attrs.field(default=1.0, validator=_seconds)
    max_delay: float = attrs.field(default=30.0, validator=_seconds)

    def wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based): from 0 to
        ``4 × max_delay``, finite."""
        exponent = min(max(attempt - 1, 0), _MAX_EXPONENT)
        backoff = min(self.max_delay, self.delay * 2.0**exponent)
        pause = random.uniform(backoff / 2, backoff)
        asked = retry_after(error)
        return max(pause, min(asked, self.max_delay * 4)) if asked is not None else pause

    def sleep(self, attempt: int, error: BaseException | None = None) -> None:
        time.sleep(self.wait(attempt, error))


def is_transient(error: BaseException) -> bool:
    if isinstance(error, AuthenticationError) or not isinstance(error, RegistryError):
        return False
    return error.status is None or error.status in TRANSIENT_STATUSES


def retry_after(error: BaseException | None, now: float | None = None) -> float | None:
    """The seconds the error's ``Retry-After`` asks for (see ``headers.retry_after``):
    None when absent or unreadable, which leaves the wait to our own backoff."""
    value = getattr(error, "retry_after", None)
    if not isinstance(value, str):
        return None
    return headers.retry_after(value, time.time() if now is None else now)
