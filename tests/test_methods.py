"""The data methods (tessy.methods) with scripted models on real tokenizers: exact spans,
authors, record fields and content for each of the eight methods."""

from __future__ import annotations

import asyncio
import json

import pytest

from tessy.backends.base import Backend
from tessy.backends.fake import ScriptedBackend
from tessy.config import SynthesizeConfig
from tessy.engine import Party
from tessy.methods import METHODS, MethodOptions, run_method
from tessy.methods.teacher_mix import mix_role
from tessy.methods.teacher_reference import REFERENCE_PROMPT
from tessy.methods.teacher_score import best_candidate, parse_score
from tessy.runner import build_engine, synthesize
from tests.test_engine import KeywordPredictor, PlainTestFormat, ThinkTestFormat

PROMPT = [{"role": "user", "content": "What is 2+3?"}]


class RoutedBackend(Backend):
    """A scripted backend whose script depends on the sequence id, and which remembers the
    first context of every sequence (what the model was shown)."""

    def __init__(self, tokenizer, route, model_name="routed"):
        self.tokenizer, self.route, self.model_name = tokenizer, route, model_name
        self.max_context = 1_000_000
        self.backends: dict[str, ScriptedBackend] = {}
        self.prompts: dict[str, str] = {}

    def _backend(self, seq_id):
        script = self.route(seq_id)
        return self.backends.setdefault(script, ScriptedBackend(self.tokenizer, script, self.model_name))

    async def generate(self, seq_id, context_ids, max_new_tokens, sampling, stop_token_ids=frozenset()):
        self.prompts.setdefault(seq_id, self.tokenizer.decode(context_ids))
        return await self._backend(seq_id).generate(seq_id, context_ids, max_new_tokens, sampling, stop_token_ids)

    def rollback(self, seq_id, length):
        self._backend(seq_id).rollback(seq_id, length)

    def release(self, seq_id):
        self._backend(seq_id).release(seq_id)


def engine_for(smol, gemma, student, teacher, fmt=None, **config):
    """`student` / `teacher`: a script, or a function seq_id -> script."""
    fmt = fmt or PlainTestFormat()

    def backend(tokenizer, script, name):
        return RoutedBackend(tokenizer, script if callable(script) else (lambda seq_id: script), name)

    parties = {
        "student": Party("student", backend(smol, student, "student-model"), fmt, KeywordPredictor(), k=4),
        "teacher": Party("teacher", backend(gemma, teacher, "teacher-model"), fmt, KeywordPredictor(), k=4),
    }
    return build_engine(SynthesizeConfig(**config), parties)


def run(engine, method, sample_id="s1", options=None):
    return asyncio.run(run_method(engine, method, sample_id, PROMPT, options))


def test_registry_lists_the_eight_methods():
    assert METHODS == ("tessy", "teacher-only", "student-only", "teacher-think", "teacher-answer",
                       "teacher-mix", "teacher-score", "teacher-reference")
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        asyncio.run(run_method(None, "nope", "s", PROMPT))


def test_teacher_think_with_thinking_section(smol_tokenizer, gemma_tokenizer):
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="The answer is 5.",
                        teacher="Two plus three is five.\n</think> The teacher's answer.", fmt=ThinkTestFormat())
    result = run(engine, "teacher-think")
    assert [(s.role, s.section, s.text) for s in result.spans] == [
        ("teacher", "thinking", "Two plus three is five.\n"), ("student", "answer", "The answer is 5.")]
    assert result.assistant_content == ThinkTestFormat().assistant_content("Two plus three is five.\n", "The answer is 5.")
    assert result.finish_reason == "stop"
    # The student saw the teacher's thinking and its own answer opener (without a second newline).
    student_prompt = engine.parties["student"].backend.prompts["s1/student"]
    assert student_prompt.endswith("<think>\nTwo plus three is five.\n</think>\n\n")
    teacher_span = result.spans[0]
    assert teacher_span.tokens_student == len(smol_tokenizer.encode(teacher_span.text, add_special_tokens=False))
    assert teacher_span.tokens_own == len(gemma_tokenizer.encode(teacher_span.text, add_special_tokens=False))


def test_teacher_answer_with_thinking_section(smol_tokenizer, gemma_tokenizer):
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="Okay, so we add them.</think> Mine.",
                        teacher="The answer is 5.", fmt=ThinkTestFormat())
    result = run(engine, "teacher-answer")
    assert [(s.role, s.section, s.text) for s in result.spans] == [
        ("student", "thinking", "Okay, so we add them."), ("teacher", "answer", "The answer is 5.")]
    assert result.assistant_content == "<think>\nOkay, so we add them.\n</think>\n\nThe answer is 5."
    assert "Mine" not in result.assistant_content


@pytest.mark.parametrize("method", ["teacher-think", "teacher-only", "tessy"])
def test_thinking_cut_by_the_budget_stays_open(smol_tokenizer, gemma_tokenizer, method):
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="The answer is 5.",
                        teacher="We keep thinking and thinking about sums " * 10, fmt=ThinkTestFormat(),
                        max_tokens=12, max_answer_tokens=4)
    result = run(engine, method)
    assert result.finish_reason == "length"
    assert {s.section for s in result.spans} == {"thinking"}
    thinking = "".join(s.text for s in result.spans)
    # No fabricated end of thinking and no empty answer: the thinking is left open.
    assert result.assistant_content == "<think>\n" + thinking and "</think>" not in result.assistant_content
    assert sum(s.tokens_student for s in result.spans) <= 12 - 4  # the thinking's share of the budget


def test_plain_split_first_paragraph_is_thinking(smol_tokenizer, gemma_tokenizer):
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="So the answer is 5.",
                        teacher="First we add two and three.\n\nThen we write it down.")
    result = run(engine, "teacher-think")
    assert [(s.role, s.section, s.text) for s in result.spans] == [
        ("teacher", "thinking", "First we add two and three.\n\n"), ("student", "answer", "So the answer is 5.")]
    assert result.assistant_content == "First we add two and three.\n\nSo the answer is 5."
    assert result.finish_reason == "stop"


def test_plain_split_budget_backs_off_to_a_word(smol_tokenizer, gemma_tokenizer):
    # No blank line: the thinking ends at half of max_tokens, on a word boundary.
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="Then five.",
                        teacher="Compute supercalifragilistic numbers and add them all up carefully now.", max_tokens=16)
    result = run(engine, "teacher-think")
    thinking = result.spans[0]
    assert thinking.role == "teacher" and thinking.tokens_own <= 8
    script = "Compute supercalifragilistic numbers and add them all up carefully now."
    assert script.startswith(thinking.text) and not script[len(thinking.text)].isalnum()
    assert result.spans[1].role == "student" and result.spans[1].text == "Then five."
    assert sum(s.tokens_student for s in result.spans) <= 16


def test_teacher_mix_is_reproducible_and_about_half(smol_tokenizer, gemma_tokenizer):
    roles = [mix_role(0, f"id{i}") for i in range(200)]
    assert 70 < roles.count("teacher") < 130
    assert roles == [mix_role(0, f"id{i}") for i in range(200)]
    assert roles != [mix_role(1, f"id{i}") for i in range(200)]  # the seed changes the draw
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="Student says five.", teacher="Teacher says five.")
    for sample_id in ("a", "b", "c", "d"):
        result = run(engine, "teacher-mix", sample_id)
        assert result.extra == {"mix_role": mix_role(0, sample_id)}
        assert [s.role for s in result.spans] == [mix_role(0, sample_id)]


def test_score_parsing_and_choice():
    assert parse_score(" 7") == 7.0 and parse_score("Score: 8.5/10") == 8.5
    assert parse_score("eleven") is None and parse_score("42") is None
    assert best_candidate([3.0, 9.0, None, 9.0]) == 1  # ties go to the earlier candidate
    assert best_candidate([None, None]) == 0 and best_candidate([None, 2.0]) == 1


def test_teacher_score_keeps_the_best_candidate(smol_tokenizer, gemma_tokenizer):
    replies = {"0": "3", "1": "9", "2": "I cannot say."}
    answers = {"0": "Five.", "1": "It is 5 because 2+3=5.", "2": "Six."}
    engine = engine_for(smol_tokenizer, gemma_tokenizer,
                        student=lambda seq: answers[seq.split("#c")[1][0]],
                        teacher=lambda seq: replies[seq.split("#j")[1][0]])
    result = run(engine, "teacher-score", options=MethodOptions(candidates=3))
    assert result.extra["scores"] == [3.0, 9.0, None]
    assert result.extra["score_replies"] == ["3", "9", "I cannot say."]
    assert result.extra["chosen"] == 1
    assert result.assistant_content == "It is 5 because 2+3=5."
    assert result.sample_id == "s1" and [s.role for s in result.spans] == ["student"]
    # The teacher judged each candidate's text inside the project's scoring prompt.
    judged = engine.parties["teacher"].backend.prompts
    assert "It is 5 because 2+3=5." in judged["s1#j1/teacher"] and "What is 2+3?" in judged["s1#j1/teacher"]
    assert result.generate_s["teacher"] >= 0 and result.generated > sum(s.tokens_own for s in result.spans)


def test_teacher_reference_prompt_has_reference_record_does_not(smol_tokenizer, gemma_tokenizer):
    engine = engine_for(smol_tokenizer, gemma_tokenizer, student="Okay, so it is 5.", teacher="The sum is 5.")
    result = run(engine, "teacher-reference")
    assert [(s.role, s.text) for s in result.spans] == [("student", "Okay, so it is 5.")]
    assert result.messages == PROMPT  # the training prompt is the plain one
    assert result.extra["reference"]["text"] == "The sum is 5."
    seen = engine.parties["student"].backend.prompts["s1/student"]
    expected = REFERENCE_PROMPT.format(prompt="What is 2+3?", reference="The sum is 5.")
    assert seen.startswith("Q: " + expected)


@pytest.mark.slow
def test_every_method_writes_a_valid_record(tmp_path, smol_tokenizer, gemma_tokenizer):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"What is {i}+3?"}) + "\n" for i in range(3)))
    for method in METHODS:
        config = dict(input=str(prompts), output=str(tmp_path / method), method=method, progress=False,
                      candidates=2, concurrency=2)
        engine = engine_for(smol_tokenizer, gemma_tokenizer, student="Okay, so we add. Wait, so it is.",
                            teacher="Three plus four is seven.\n\nSo done.", **config)
        report = synthesize(SynthesizeConfig(**config), engine=engine)
        assert report.written == 3 and report.failed == 0, method
        records = [json.loads(line) for line in (tmp_path / method / "records.jsonl").read_text().splitlines()]
        assert {r["method"] for r in records} == {method}
        assert all(r["messages"][:-1] == [{"role": "user", "content": r["messages"][0]["content"]}] for r in records)
        if method == "teacher-score":
            assert all(len(r["scores"]) == 2 and r["chosen"] in (0, 1) for r in records)
        if method == "teacher-reference":
            assert all("Reference answer" not in r["messages"][0]["content"] and r["reference"]["text"] for r in records)
        if method in ("teacher-think", "teacher-answer"):
            thinker = "teacher" if method == "teacher-think" else "student"
            assert all(r["spans"][0]["role"] == thinker and r["spans"][0]["section"] == "thinking" for r in records)


def test_candidates_shape_only_teacher_score_fingerprints():
    base = SynthesizeConfig(method="tessy").data_fields()
    assert "candidates" not in base
    assert SynthesizeConfig(method="teacher-score", candidates=3).data_fields()["candidates"] == 3
