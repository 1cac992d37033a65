"""The cooperative loop with scripted models on real tokenizers: fast and exact.

A scripted backend writes a known text, and a keyword predictor labels known words as style, so
every cut, hand-over and span can be asserted exactly. The real-model runs are in
test_synthesize_real.py.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.engine import Engine, Limits, Party
from tessy.formats.base import ChatFormat
from tessy.predictors.base import BoundaryPredictor, SpanQuery

STYLE_WORDS = {"okay", "wait", "hmm", "so"}


class KeywordPredictor(BoundaryPredictor):
    """Style = a piece whose word is in STYLE_WORDS (punctuation after it too)."""

    name = "keywords"

    def __init__(self):
        self.queries: list[SpanQuery] = []

    async def label(self, query: SpanQuery) -> list[bool]:
        self.queries.append(query)
        labels, previous = [], False
        for piece in query.pieces:
            word = re.sub(r"[^a-z]", "", piece.lower())
            if word:
                previous = word in STYLE_WORDS
            labels.append(previous)  # punctuation and spaces follow the word before them
        return labels


class PlainTestFormat(ChatFormat):
    name = "plain-test"
    has_thinking = False

    def prompt_text(self, tokenizer, messages):
        return "Q: " + messages[-1]["content"] + "\nA:"

    def find_thinking_end(self, text):
        return None


class ThinkTestFormat(ChatFormat):
    name = "think-test"
    has_thinking = True
    thinking_opener = "<think>\n"
    answer_opener = "\n</think>\n\n"

    def prompt_text(self, tokenizer, messages):
        return "Q: " + messages[-1]["content"] + "\nA: " + self.thinking_opener

    def find_thinking_end(self, text):
        position = text.find("</think>")
        return None if position < 0 else position


def make_engine(student_tok, teacher_tok, student_script, teacher_script, fmt=None, k=6, **limits):
    fmt = fmt or PlainTestFormat()
    student = Party("student", ScriptedBackend(student_tok, student_script, "student"), fmt, KeywordPredictor(), k=k)
    teacher = Party("teacher", ScriptedBackend(teacher_tok, teacher_script, "teacher"), fmt, KeywordPredictor(), k=k)
    return Engine(student, teacher, Limits(**limits))


def run(engine, prompt="What is 2+3?", sample_id="s1"):
    return asyncio.run(engine.run(sample_id, [{"role": "user", "content": prompt}]))


def test_spans_alternate_and_cut_at_predictor_verdicts(smol_tokenizer, gemma_tokenizer):
    engine = make_engine(
        smol_tokenizer,
        gemma_tokenizer,
        student_script="Okay, so wait. Wait, okay so. So so so so so so so so so so so so so so so so.",
        teacher_script="We add two and three to get five. Wait, then we check the sum again. Okay, done.",
    )
    result = run(engine)
    roles = [span.role for span in result.spans]
    assert roles == ["student", "teacher", "student"]
    for span in result.spans:
        words = {re.sub(r"[^a-z]", "", w.lower()) for w in span.text.split()} - {""}
        if span.role == "teacher":
            assert not words & STYLE_WORDS, span.text  # teacher spans end before style tokens
        else:
            assert words <= STYLE_WORDS, span.text
    assert result.finish_reason == "stop"  # the student's script ends
    # The response is exactly the concatenation of the spans.
    assert result.assistant_content == "".join(span.text for span in result.spans)


def test_word_boundary_back_off_when_tokenizers_differ(smol_tokenizer, gemma_tokenizer):
    # k=3 splits the long word across steps; the teacher's hand-over must still end on a word
    # boundary of its own text, never mid-word.
    teacher_script = "Compute supercalifragilistic numbers quickly okay then."
    engine = make_engine(
        smol_tokenizer,
        gemma_tokenizer,
        student_script="Okay, wait. Hmm, okay.",
        teacher_script=teacher_script,
        k=3,
    )
    result = run(engine)
    written = ""
    teacher_spans = [span for span in result.spans if span.role == "teacher"]
    assert teacher_spans
    for span in teacher_spans:
        written += span.text
        assert teacher_script.startswith(written)
        next_char = teacher_script[len(written) : len(written) + 1]
        assert not (re.match(r"\w", written[-1:]) and re.match(r"\w", next_char)), (written, next_char)


def test_thinking_end_hands_answer_to_student(smol_tokenizer, gemma_tokenizer):
    fmt = ThinkTestFormat()
    engine = make_engine(
        smol_tokenizer,
        gemma_tokenizer,
        student_script="Okay, so. The answer is 5, clearly stated.",
        teacher_script="Two plus three is five.</think> The teacher answer must never appear.",
        fmt=fmt,
    )
    result = run(engine)
    sections = [span.section for span in result.spans]
    assert "answer" in sections
    answer_spans = [span for span in result.spans if span.section == "answer"]
    assert all(span.role == "student" for span in answer_spans)
    assert "teacher answer" not in result.assistant_content
    assert "</think>" in result.assistant_content
    assert result.assistant_content.startswith("<think>\n")


def test_forced_progress_breaks_empty_ping_pong(smol_tokenizer, gemma_tokenizer):
    # The student only writes capability and the teacher only style: both would cut at 0 forever.
    engine = make_engine(
        smol_tokenizer,
        gemma_tokenizer,
        student_script="Numbers add up to five here.",
        teacher_script="Okay wait okay wait okay wait.",
        max_spans=50,
    )
    result = run(engine)
    # every span is one forced word, the models taking turns, until the teacher's script ends
    assert [(span.role, span.text) for span in result.spans] == [
        ("student", "Numbers"), ("teacher", "Okay"), ("student", " add"), ("teacher", " wait"), ("student", " up"),
        ("teacher", " okay"), ("student", " to"), ("teacher", " wait"), ("student", " five"), ("teacher", " okay"),
        ("student", " here"), ("teacher", " wait.")]
    assert all(span.forced for span in result.spans)
    assert result.finish_reason == "stop"


def test_budget_ends_sample(smol_tokenizer, gemma_tokenizer):
    # The teacher writes reasoning that never repeats and never turns to style: only the budget
    # (counted in the student's tokens, the teacher's text included) can end it.
    engine = make_engine(
        smol_tokenizer,
        gemma_tokenizer,
        student_script="Okay, so the sum is next. " * 20,
        teacher_script=" ".join(f"Step {i} adds {i} and {i + 1}." for i in range(100)),
        max_tokens=40,
    )
    result = run(engine)
    assert result.finish_reason == "length"
    assert [span.role for span in result.spans] == ["student", "teacher"]
    assert sum(span.tokens_student for span in result.spans) <= 40


def test_prompt_too_long(smol_tokenizer, gemma_tokenizer):
    from tessy.engine import PromptTooLong

    engine = make_engine(smol_tokenizer, gemma_tokenizer, "Okay.", "Five.")
    engine.parties["teacher"].backend.max_context = 10
    with pytest.raises(PromptTooLong, match="teacher"):
        run(engine, prompt="word " * 50)
