"""`teacher-think` and `teacher-answer`: one model thinks, the other writes the final answer
(`Engine.run_split`). For families without a thinking section the thinker's first paragraph
(up to its first blank line, at most half of `max_tokens`) is the thinking and the other model
continues the response after it."""

from tessy.engine import STUDENT, TEACHER
from tessy.methods.registry import register


@register("teacher-think", "the teacher thinks, the student writes the answer")
async def teacher_think(engine, sample_id, messages, options):
    return await engine.run_split(sample_id, messages, thinker=TEACHER, answerer=STUDENT)


@register("teacher-answer", "the student thinks, the teacher writes the answer")
async def teacher_answer(engine, sample_id, messages, options):
    return await engine.run_split(sample_id, messages, thinker=STUDENT, answerer=TEACHER)
