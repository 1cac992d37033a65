"""`teacher-score` (rejection sampling): the student writes `options.candidates` responses, the
teacher scores each with `SCORING_PROMPT`, and the best is kept.

Promises:

- candidates are sampled with their own seeds (the sample id plus `#c<i>`), all at once, so the
  backend can batch them; the kept response is candidate `chosen`, unchanged;
- the teacher judges greedily (`judge`); for families with a thinking section it sees the
  candidate's final answer (the whole response when there is none) and its score is read from
  its final answer;
- a score is the first number in the teacher's reply, kept when it lies in 0..10, else `None`;
  the highest score wins, ties go to the earlier candidate, and with no score at all candidate 0
  is kept;
- the record holds every score (`scores`), the teacher's replies (`score_replies`), each
  candidate's length in student tokens (`candidate_tokens`) and `chosen`; its timings and
  generated-token totals count all candidates and all judging.
"""

from __future__ import annotations

import asyncio
import re
import time

from dataclasses import dataclass

from tessy.engine import STUDENT, TEACHER, Engine, SampleResult, stop_string_end
from tessy.methods.registry import merge_timings, register, with_extra
from tessy.methods.single import write_alone

SCORING_PROMPT = (
    "You are grading an answer written by a student model.\n\n"
    "Task:\n{prompt}\n\n"
    "Student's answer:\n{answer}\n\n"
    "How correct and useful is this answer? Give a score from 0 (useless or wrong) to 10 "
    "(fully correct and clear). Reply with the number only."
)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Judgement:
    """A model's greedy answer to a judging prompt."""

    text: str
    finish: str
    generate_s: float
    generated: int


async def judge(engine: Engine, sample_id: str, messages: list[dict[str, str]], role: str = TEACHER) -> Judgement:
    """`role` answers `messages` greedily, in its own tokens: with a thinking section it thinks
    (at most `max_tokens - max_answer_tokens`) and its final answer is the reply ("" if its
    thinking never ends); without one, at most 16 tokens are its reply."""
    state = engine.new_state(sample_id, messages, roles=(role,), turn=role, min_room=1)
    chat_format = engine.parties[role].format
    try:
        if chat_format.has_thinking:
            thought = await engine.write(state, role, engine.limits.thinking_budget(), chat_format.find_thinking_end,
                                         temperature=0.0, own_tokens=True)
            engine.commit(state, role, "thinking", thought.pieces, len(thought.pieces), thought.generated)
            written = thought
            if thought.finish in ("stop", "end"):
                written = await engine.write_answer(state, role, temperature=0.0, own_tokens=True)
            text = written.text if written is not thought else ""
        else:
            written = await engine.write(state, role, 16, stop_string_end(chat_format), temperature=0.0,
                                         own_tokens=True)
            text = written.text
    finally:
        engine.release(state)
    return Judgement(text, written.finish, state.generate_s[role], state.generated)


def parse_score(reply: str) -> float | None:
    match = _NUMBER.search(reply)
    if not match:
        return None
    value = float(match.group())
    return value if 0.0 <= value <= 10.0 else None


def best_candidate(scores: list[float | None]) -> int:
    best = 0
    for index, score in enumerate(scores):
        if score is not None and (scores[best] is None or score > scores[best]):
            best = index
    return best


def candidate_answer(result: SampleResult) -> str:
    answer = "".join(span.text for span in result.spans if span.section == "answer")
    return answer or "".join(span.text for span in result.spans)


def scoring_messages(messages: list[dict[str, str]], answer: str) -> list[dict[str, str]]:
    prompt = "\n\n".join(m["content"] for m in messages if m["role"] == "user")
    return [{"role": "user", "content": SCORING_PROMPT.format(prompt=prompt, answer=answer)}]


@register("teacher-score", "the student writes n candidates, the teacher scores them, the best is kept")
async def teacher_score(engine, sample_id, messages, options):
    started = time.perf_counter()
    count = max(1, options.candidates)
    candidates = await asyncio.gather(*(
        write_alone(engine, f"{sample_id}#c{index}", messages, STUDENT) for index in range(count)))
    judgements = await asyncio.gather(*(
        judge(engine, f"{sample_id}#j{index}", scoring_messages(messages, candidate_answer(result)))
        for index, result in enumerate(candidates)))
    scores = [parse_score(judgement.text) for judgement in judgements]
    chosen = best_candidate(scores)
    result = candidates[chosen]
    generate_s = merge_timings(candidates)
    generate_s["teacher"] = generate_s.get("teacher", 0.0) + sum(j.generate_s for j in judgements)
    generated = sum(c.generated for c in candidates) + sum(j.generated for j in judgements)
    kept = sum(span.tokens_own for span in result.spans)
    final = SampleResult(sample_id, list(messages), result.assistant_content, result.spans, result.finish_reason,
                         time.perf_counter() - started, generate_s, 0.0, generated, generated - kept,
                         sum(c.steps for c in candidates))
    return with_extra(final, scores=scores, score_replies=[j.text for j in judgements],
                      candidate_tokens=[sum(s.tokens_student for s in c.spans) for c in candidates], chosen=chosen)
