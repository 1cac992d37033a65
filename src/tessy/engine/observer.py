"""The cooperative loop's observer: the named events of Algorithm 1, for whoever writes them down.

Owns the one interface between the loop (`tessy.engine.cooperative`) and a listener, such as
the mid-trace journal (`tessy.journal.Journal`, set by the runner). Every event is a no-op
here, so `LoopObserver()` is the engine's default: no listener.

Events, in the order a sample sees them:

- `resume(pair, state, messages)`: before the first step; a listener may rebuild `state` from
  what it wrote down (the same sequences, spans, turn count and so per-turn seeds; the open
  span's ids in `state.resumed["open"]`) and return how the alternation had already ended;
- `step_kept(state, span)`: a step ended without a cut, the same model goes on with `span`;
- `turn_closed(state, finish)`: a turn is closed, its span kept and handed over (`finish`: how
  the alternation ends, None while it goes on);
- `sample_left(sample_id)`: the sample left the alternation (done, or failed).

Promise: a listener sees the loop, never steers it; its events change no record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tessy.engine.pair import Pair
    from tessy.engine.state import OpenSpan, SampleState


class LoopObserver:
    """Listens to the cooperative loop (see the module docstring); this base listens to nothing."""

    def resume(self, pair: "Pair", state: "SampleState", messages: list[dict[str, str]]) -> str | None:
        """Rebuild `state` (fresh from `Pair.new_state`) if there is anything to go on from;
        return how its alternation ended, or None to go on alternating."""
        return None

    def step_kept(self, state: "SampleState", span: "OpenSpan") -> None:
        """A step ended without a cut: `span` goes on (its pieces so far, its request if any)."""

    def turn_closed(self, state: "SampleState", finish: str | None) -> None:
        """A turn is closed (`finish`: how the alternation ends, None while it goes on)."""

    def sample_left(self, sample_id: str) -> None:
        """The sample left the alternation: no more events for it."""
