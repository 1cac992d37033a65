"""`teacher-think` and `teacher-answer`: one model thinks, the other writes the final answer.

With a thinking section: the thinker thinks (at most `max_tokens - max_answer_tokens` student
tokens); if its thinking ends, the answerer continues from that thinking (the same ids when the
vocabularies are the same, else the text tokenized by the answerer) after its own end-of-thinking
syntax, for at most `max_answer_tokens`. Thinking that never ends stays open and gets no answer.

Without one (the plain small pair), "thinking" is the thinker's first paragraph: its text up to
and including its first blank line, at most half of `max_tokens`; a budget cut backs off to a
word boundary (the kept text ends with a non-word character), so the answerer never continues
from half a word. The answerer continues the response for the rest of `max_tokens`. A thinker
that stops before a blank line hands over all it wrote.
"""

from __future__ import annotations

import time

from tessy.engine import STUDENT, TEACHER, Engine, SampleResult, stop_string_end
from tessy.engine.cuts import word_boundary_at_or_before
from tessy.methods.registry import register
from tessy.methods.single import finish_of


def paragraph_end(text: str) -> int | None:
    """Offset just after the first blank line that follows some text (and any newlines after it)."""
    start = len(text) - len(text.lstrip())
    position = text.find("\n\n", start)
    if position < 0:
        return None
    end = position + 2
    while end < len(text) and text[end] == "\n":
        end += 1
    return end


def plain_thinking_end(chat_format):
    """`find_end` of the "thinking" of a family without a thinking section: its first paragraph,
    or less if a stop string comes first."""
    stops = stop_string_end(chat_format)

    def find(text: str) -> int | None:
        found = [end for end in (paragraph_end(text), stops(text) if stops else None) if end is not None]
        return min(found) if found else None

    return find


async def think_then_answer(engine: Engine, sample_id: str, messages: list[dict[str, str]], thinker: str,
                            answerer: str) -> SampleResult:
    started = time.perf_counter()
    state = engine.new_state(sample_id, messages, turn=thinker)
    think_format = engine.parties[thinker].format
    try:
        if engine.has_thinking:
            thought = await engine.write(state, thinker, engine.limits.thinking_budget(), think_format.find_thinking_end)
            thinking_ended = finish_of(thought.finish) == "stop"
        else:
            thought = await engine.write(state, thinker, max(1, engine.limits.max_tokens // 2),
                                         plain_thinking_end(think_format))
            if thought.finish == "length":  # the answerer must not continue from half a word
                thought.pieces.truncate(word_boundary_at_or_before(thought.pieces, len(thought.pieces), open_end=True))
            thinking_ended = thought.finish not in ("repetition", "context")
        kept = len(thought.pieces)
        engine.commit(state, thinker, "thinking", thought.pieces, kept, thought.generated)
        engine.hand_over(state, thinker, thought.pieces, kept, to=answerer)
        finish = finish_of(thought.finish)
        if thinking_ended:
            state.turn = answerer
            if engine.has_thinking:
                finish = finish_of((await engine.write_answer(state, answerer)).finish)
            else:
                budget = engine.limits.max_tokens - state.section_tokens("thinking")
                answer = await engine.write(state, answerer, budget, stop_string_end(engine.parties[answerer].format))
                engine.commit(state, answerer, "answer", answer.pieces, len(answer.pieces), answer.generated)
                finish = finish_of(answer.finish)
    finally:
        engine.release(state)
    return engine.result(state, messages, finish, started)


@register("teacher-think", "the teacher thinks, the student writes the answer")
async def teacher_think(engine, sample_id, messages, options):
    return await think_then_answer(engine, sample_id, messages, thinker=TEACHER, answerer=STUDENT)


@register("teacher-answer", "the student thinks, the teacher writes the answer")
async def teacher_answer(engine, sample_id, messages, options):
    return await think_then_answer(engine, sample_id, messages, thinker=STUDENT, answerer=TEACHER)
