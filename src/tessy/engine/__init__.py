"""The engine: what two models do to write one response, and nothing about files, HTTP or the CLI.

The folder follows the flow:

- `state.py`        the pair's parties, the limits (one budget rule for every method), one
                    sample's state and open span, the result, the finish reasons;
- `text.py`         plain-text rules: word boundaries, repetition;
- `decode.py`       token ids to text without ever splitting a character, and `write_until`,
                    the one chunked "generate until stop / end / budget / context / repetition";
- `cuts.py`         where a span may be cut: character and word boundaries, forced progress;
- `pair.py`         `Pair`: the checked pair's operations: prompts, one generate call, verdicts,
                    counting in the student's tokens, hand-overs, commits, whole sections, the
                    final answer, the result;
- `learned.py`      what a run learns as it goes: recent turn lengths, the k in effect;
- `observer.py`     `LoopObserver`: the loop's named events, for the journal;
- `turn_request.py` one streamed request serving a turn's steps;
- `speed.py`        the speed layer: how a step gets its tokens and verdicts cheaply (`Speedups`);
- `cooperative.py`  Algorithm 1 (`cooperate`) and `Engine`, the pair with its speed layer and observer.

The baselines (teacher-only, teacher-think, ...) are data methods in `tessy.methods`, built on
`Pair.write` and `Pair.write_answer`.
"""

from tessy.engine.cooperative import Engine, cooperate
from tessy.engine.observer import LoopObserver
from tessy.engine.pair import Pair, seq_id, stop_string_end
from tessy.engine.speed import PAPER, Speedups
from tessy.engine.state import (FINISH_REASONS, OTHER, ROLES, SECTIONS, STUDENT, TEACHER, Limits, PairError, Party,
                                PromptTooLong, SampleResult, SampleState, Span)

__all__ = ["Engine", "Pair", "cooperate", "Speedups", "PAPER", "LoopObserver", "Party", "Limits", "PromptTooLong",
           "PairError", "SampleResult", "SampleState", "Span", "FINISH_REASONS", "SECTIONS", "ROLES", "OTHER",
           "STUDENT", "TEACHER", "seq_id", "stop_string_end"]
