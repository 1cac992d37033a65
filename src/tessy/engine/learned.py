"""What a run learns as it goes: how long each role's turns are, and how much was asked for.

Owns the run-wide statistics the speed layer (`tessy.engine.speed`) plans with, shared by every
sample of one engine:

- `span_lengths`: the kept lengths of each role's last 64 turns (own tokens, empty turns too);
- `typical_turn`: where a step of a role is first worth labelling with a costly predictor;
- `request_size`: how many tokens one request of a backend that cannot stop part-way asks for
  (adaptive k), and the counts behind `k_used`, the k in effect per role (the run report's).

None of it changes a record: it decides only how many tokens are asked for and when a predictor
is asked, never where a span is cut.
"""

from __future__ import annotations

import math
from collections import deque

#: The fewest tokens an adaptive-k request asks for.
MIN_REQUEST = 4
#: Turns remembered per role.
MEMORY = 64


class TurnLengths:
    """Recent turn lengths per role, and the tokens asked per request or step."""

    def __init__(self, roles: tuple[str, ...]):
        self.span_lengths = {role: deque(maxlen=MEMORY) for role in roles}
        self.requests = {role: [0, 0] for role in roles}  # [tokens asked, asks]: a request, or a turn request's step

    def note_turn(self, role: str, kept: int) -> None:
        """A cooperative turn of `role` ended with `kept` tokens."""
        self.span_lengths[role].append(kept)

    def typical_turn(self, role: str, window: int) -> int:
        """The mean length of `role`'s recent turns, between 1 and `window` (1 before any turn has ended)."""
        lengths = self.span_lengths[role]
        return min(window, max(1, sum(lengths) // len(lengths))) if lengths else 1

    def request_size(self, role: str, wanted: int, adaptive: bool) -> int:
        """How many of `wanted` tokens one request asks for, counted as asked: all of them, unless
        `adaptive` (a backend that cannot stop a request part-way, and adaptive k on); then about
        twice the role's recent span length (at least MIN_REQUEST), so short spans do not pay for
        k tokens each."""
        lengths = self.span_lengths[role]
        size = wanted
        if adaptive and lengths:
            size = min(wanted, max(MIN_REQUEST, 2 * math.ceil(sum(lengths) / len(lengths)) + 2))
        self.requests[role][0] += size
        self.requests[role][1] += 1
        return size

    def k_used(self) -> dict[str, float]:
        """Mean tokens asked for per cooperative request or step, per role (the k in effect)."""
        return {role: round(asked / count, 2) for role, (asked, count) in self.requests.items() if count}
