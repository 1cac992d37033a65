"""`teacher-reference` (self-distillation): the teacher writes a reference answer, then the
student writes its thinking and answer with the reference in its prompt (`REFERENCE_PROMPT`).

Promises:

- the reference is the teacher's final answer (for families with a thinking section; its
  thinking if it never finished thinking) or its whole response (families without one);
- every span of the record is the student's; the record's messages are the plain prompt, without
  the reference, as training data must be; the reference itself is kept in `record["reference"]`;
- timings and generated-token totals count the teacher's reference too.
"""

from __future__ import annotations

import time

from tessy.engine import STUDENT, TEACHER, SampleResult
from tessy.methods.registry import merge_timings, register, with_extra
from tessy.methods.single import write_alone

REFERENCE_PROMPT = (
    "{prompt}\n\n"
    "A stronger model wrote the reference answer below. Use it to check your work, but reason "
    "and answer in your own words; do not mention the reference.\n\n"
    "Reference answer:\n{reference}"
)


def reference_text(result: SampleResult) -> str:
    answer = "".join(span.text for span in result.spans if span.section == "answer")
    return answer or "".join(span.text for span in result.spans)


def with_reference(messages: list[dict[str, str]], reference: str) -> list[dict[str, str]]:
    """`messages` with the reference added to the last user turn."""
    last = max(index for index, message in enumerate(messages) if message["role"] == "user")
    out = [dict(message) for message in messages]
    out[last]["content"] = REFERENCE_PROMPT.format(prompt=out[last]["content"], reference=reference.strip())
    return out


@register("teacher-reference", "the teacher writes a reference answer, the student writes thinking and answer with it")
async def teacher_reference(engine, sample_id, messages, options):
    started = time.perf_counter()
    teacher = await write_alone(engine, sample_id, messages, TEACHER)
    reference = reference_text(teacher)
    student = await write_alone(engine, sample_id, messages, STUDENT, prompt_messages=with_reference(messages, reference))
    generated = teacher.generated + student.generated
    kept = sum(span.tokens_own for span in student.spans)
    result = SampleResult(sample_id, list(messages), student.assistant_content, student.spans, student.finish_reason,
                          time.perf_counter() - started, merge_timings([teacher, student]), 0.0, generated,
                          generated - kept, teacher.steps + student.steps)
    return with_extra(result, reference={
        "text": reference,
        "tokens_teacher": len(engine.parties[TEACHER].tokenizer.encode(reference, add_special_tokens=False)),
        "finish_reason": teacher.finish_reason,
    })
