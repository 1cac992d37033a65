"""The engine: what two models do to write one response, and nothing about files, HTTP or the CLI.

The folder follows the flow:

- `state.py`        the pair's parties, the limits (one budget rule for every method), one
                    sample's state, the result, the finish reasons;
- `decode.py`       token ids to text without ever splitting a character, and `write_until`,
                    the one chunked "generate until stop / end / budget / context / repetition";
- `text.py`         word boundaries for cuts between different vocabularies, repetition;
- `pair.py`         `Engine`: the checked pair, prompts, one generate call, counting in the
                    student's tokens, hand-overs, whole sections, the final answer, the result;
- `cooperative.py`  Algorithm 1 (step, verdicts, cut, back-off, close span, answer).

The baselines (teacher-only, teacher-think, ...) are data methods in `tessy.methods`, built on
`Engine.write` and `Engine.write_answer`.
"""

from tessy.engine.pair import Engine, seq_id, stop_string_end
from tessy.engine.state import (FINISH_REASONS, OTHER, ROLES, SECTIONS, STUDENT, TEACHER, Limits, PairError, Party,
                                PromptTooLong, SampleResult, SampleState, Span)

__all__ = ["Engine", "Party", "Limits", "PromptTooLong", "PairError", "SampleResult", "SampleState", "Span",
           "FINISH_REASONS", "SECTIONS", "ROLES", "OTHER", "STUDENT", "TEACHER", "seq_id", "stop_string_end"]
