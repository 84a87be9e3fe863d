"""When and how long to wait before trying a request again.

Transient: no answer at all (connection refused or reset, timeout), and the statuses
servers use for "not now": 408, 429, 500, 502, 503, 504.  Waits grow exponentially with
full jitter (so parallel uploads do not retry in lockstep), capped, and a ``Retry-After``
from the server wins when it asks for longer.
"""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import attrs

from ..errors import AuthenticationError, RegistryError

__all__ = ["RetryPolicy", "TRANSIENT_STATUSES", "is_transient", "retry_after"]

TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@attrs.frozen
class RetryPolicy:
    attempts: int = 3  # retries after the first try, per request (podman's --retry default)
    delay: float = 1.0  # the first wait, doubled each time (podman's --retry-delay)
    max_delay: float = 30.0

    def wait(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based)."""
        backoff = min(self.max_delay, self.delay * 2 ** (attempt - 1))
        pause = random.uniform(backoff / 2, backoff)
        asked = retry_after(error)
        return max(pause, min(asked, self.max_delay * 4)) if asked is not None else pause

    def sleep(self, attempt: int, error: BaseException | None = None) -> None:
        time.sleep(self.wait(attempt, error))


def is_transient(error: BaseException) -> bool:
    if isinstance(error, AuthenticationError) or not isinstance(error, RegistryError):
        return False
    return error.status is None or error.status in TRANSIENT_STATUSES


def retry_after(error: BaseException | None) -> float | None:
    value = getattr(error, "retry_after", None)
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
