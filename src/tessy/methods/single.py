"""`teacher-only` and `student-only`: one model writes the whole response (`Engine.run_single`)."""

from tessy.engine import STUDENT, TEACHER
from tessy.methods.registry import register


@register("teacher-only", "the teacher writes every response")
async def teacher_only(engine, sample_id, messages, options):
    return await engine.run_single(sample_id, messages, TEACHER)


@register("student-only", "the student writes every response")
async def student_only(engine, sample_id, messages, options):
    return await engine.run_single(sample_id, messages, STUDENT)
