"""Retry policy: which answers are retried, how long to wait, and when to give up.

Owns the retry budgets. Promises:

- **What is retried**: timeouts, connection errors (refused, reset, dropped mid-answer), 429, any
  5xx, and a 200 whose body is not a completion (malformed JSON, no choices). Any other status is
  final: a context-length error goes back to the backend (it lowers `max_context`), the rest is a
  `ServerError` at once.
- **How long to wait**: the server's `Retry-After` (seconds or an HTTP date) when it sends one,
  else exponential backoff with full jitter, `uniform(0, backoff_s * 2**(retry - 1))`; both
  capped at `MAX_BACKOFF_S`.
- **When to give up**: after `max_retries` retries of one request, or `max_sample_retries` of one
  sequence id in all (kept after `release`, so a requeued sample does not start afresh): then
  `ServerError`. A connection failure that opens its replica's circuit breaker (a probe finds
  the server down) or finds it open is charged to neither budget (see `replicas.py`): the
  backend waits for a server instead of burning retries.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

#: Longest wait between retries (also caps a server's Retry-After).
MAX_BACKOFF_S = 60.0


class ServerError(RuntimeError):
    """A request failed for good: a non-retryable 4xx, or retries exhausted."""


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), capped; None if absent."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_BACKOFF_S)


def fault_kind(fault: str) -> str:
    """The counter a fault message is filed under: "timeout", "connection", "HTTP 503", "malformed"…"""
    return fault[:8] if fault.startswith("HTTP") else fault.split(" ")[0]


@dataclass
class RetryPolicy:
    max_retries: int = 5
    max_sample_retries: int | None = None  # None: 4 * max_retries
    backoff_s: float = 0.5
    spent: dict[str, int] = field(default_factory=dict)  # seq_id -> retries spent (kept after release)

    def __post_init__(self) -> None:
        self.max_retries = max(0, int(self.max_retries))
        self.max_sample_retries = (4 * self.max_retries if self.max_sample_retries is None
                                   else max(0, int(self.max_sample_retries)))
        self.backoff_s = float(self.backoff_s)

    def charge(self, seq_id: str, attempt: int) -> str | None:
        """Count the `attempt`-th retry of a request of `seq_id`: None if it may go ahead, else
        which bound it hit (for the `ServerError` message)."""
        spent = self.spent[seq_id] = self.spent.get(seq_id, 0) + 1
        if attempt > self.max_retries:
            return f"{self.max_retries} retries"
        if spent > self.max_sample_retries:
            return f"{self.max_sample_retries} retries for this sample"
        return None

    def delay(self, attempt: int, server_says: float | None = None) -> float:
        """Seconds to wait before the `attempt`-th retry (1-based)."""
        if server_says is not None:
            return server_says
        return random.uniform(0.0, min(MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1)))
