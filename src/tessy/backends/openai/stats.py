"""`HTTPStats`: the live counters of one role's HTTP backend.

Owns what is counted and what the progress line and the run report show of it (`counters`).
Every field only grows, except `replicas_down` and `waiting` (states now); read them any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HTTPStats:
    """Live counters (read them any time, e.g. for a progress line)."""

    requests: int = 0  # HTTP requests sent (retries included)
    completions: int = 0  # generate calls answered
    retries: int = 0  # retries charged to a request's budget
    faults: dict[str, int] = field(default_factory=dict)  # faults seen, by kind ("timeout", "HTTP 503"…)
    context_errors: int = 0
    prompt_tokens: int = 0  # prompt tokens the servers counted (`usage`; else the context ids sent)
    prompt_processed: int = 0  # of those, the ones the servers computed (not found in a prefix cache)
    prompt_reported: int = 0  # answers that said how much of the prompt was cached
    prompt_unknown: int = 0  # streams stopped before the server said it (see `cache`): counted as computed
    follow_ups: int = 0  # of those, requests of a sample after its first (see `cache.PromptMeter`)
    follow_up_excess: int = 0  # prompt tokens those computed beyond the ones new since the sample's last request
    completion_tokens: int = 0
    # The servers' own counters (`metrics`), read at the start and the end of a run:
    server_prompt_tokens: int = 0  # prompt tokens they took in
    server_prompt_cached: int = 0  # of those, found in their prefix cache
    server_counted: int = 0  # replicas read
    server_shared: int = 0  # replicas another role read (one server for both roles: its figure is there)
    replicas_down: int = 0  # replicas whose breaker is open now
    breaker_trips: int = 0
    waiting: int = 0  # requests waiting for any server of the role to answer

    @property
    def faults_total(self) -> int:
        return sum(self.faults.values())

    def counters(self) -> dict[str, int]:
        """What the progress line and the run report show (`Backend.server_counters`)."""
        return {"retries": self.retries, "faults": self.faults_total, "down": self.replicas_down,
                "prompt_tokens": self.prompt_tokens, "prompt_processed": self.prompt_processed,
                "prompt_reported": self.prompt_reported, "prompt_unknown": self.prompt_unknown,
                "follow_ups": self.follow_ups,
                "follow_up_excess": self.follow_up_excess, "completions": self.completions,
                "server_prompt_tokens": self.server_prompt_tokens, "server_prompt_cached": self.server_prompt_cached,
                "server_counted": self.server_counted, "server_shared": self.server_shared}
