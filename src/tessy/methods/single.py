"""`teacher-only` and `student-only`: one model writes the whole response.

`write_alone` is also the building block of teacher-mix, teacher-score and teacher-reference.
The response is recorded in the same schema as TESSY's (spans with their author, in the
student's format) and under the same budget rule (`Limits`): with a thinking section, the model
thinks for at most `max_tokens - max_answer_tokens` student tokens; if its thinking ends, it
writes the final answer after its own end-of-thinking syntax for at most `max_answer_tokens`;
if not, the thinking stays open and the sample ends with "length" (or "repetition", "context").
Without a thinking section, the whole response gets `max_tokens`.
"""

from __future__ import annotations

import time

from tessy.engine import STUDENT, TEACHER, Engine, SampleResult, stop_string_end
from tessy.methods.registry import register


def finish_of(written_finish: str) -> str:
    """A phase's finish as a sample's: a found end or a stop token is a complete "stop"."""
    return "stop" if written_finish in ("stop", "end") else written_finish


async def write_alone(engine: Engine, sample_id: str, messages: list[dict[str, str]], role: str,
                      prompt_messages: list[dict[str, str]] | None = None) -> SampleResult:
    """`role` writes the whole response. `prompt_messages`, when given, is what the model sees
    instead of `messages` (teacher-reference); the result keeps `messages`."""
    started = time.perf_counter()
    state = engine.new_state(sample_id, prompt_messages or messages, roles=(role,), turn=role)
    chat_format = engine.parties[role].format
    try:
        if engine.has_thinking:
            thought = await engine.write(state, role, engine.limits.thinking_budget(), chat_format.find_thinking_end)
            engine.commit(state, role, "thinking", thought.pieces, len(thought.pieces), thought.generated)
            finish = finish_of(thought.finish)
            if finish == "stop":  # the thinking ended: the same model answers
                finish = finish_of((await engine.write_answer(state, role)).finish)
        else:
            written = await engine.write(state, role, engine.limits.max_tokens, stop_string_end(chat_format))
            engine.commit(state, role, "response", written.pieces, len(written.pieces), written.generated)
            finish = finish_of(written.finish)
    finally:
        engine.release(state)
    return engine.result(state, messages, finish, started)


@register("teacher-only", "the teacher writes every response")
async def teacher_only(engine, sample_id, messages, options):
    return await write_alone(engine, sample_id, messages, TEACHER)


@register("student-only", "the student writes every response")
async def student_only(engine, sample_id, messages, options):
    return await write_alone(engine, sample_id, messages, STUDENT)
