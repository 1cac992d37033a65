"""Records are right by construction, for every method: whole characters only, budgets never
exceeded, truncated thinking left open, pairs checked. Scripted models on a byte-level test
tokenizer (every multi-byte character split across tokens) and on the real SmolLM2, Gemma and
Qwen3 tokenizers, with step sizes that put a step boundary inside every kind of character."""

from __future__ import annotations

import asyncio

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.engine import Engine, Limits, PairError, Party
from tessy.methods import METHODS, MethodOptions, run_method
from tests.byte_tokenizer import build_byte_tokenizer
from tessy.predictors.base import BoundaryPredictor, SpanQuery
from tests.test_engine import STYLE_WORDS, PlainTestFormat, ThinkTestFormat

STUDENT_SCRIPT = "Okay, so 北京 wait 🙂 hmm, so 𝔼[X] ≤ ∑ okay — naïve so 欢迎你 wait x²+y² so done. "
TEACHER_SCRIPT = "We add 𝔼 and ∑ then 北京欢迎你 gives café 🙂 so x² ≤ y² holds; wait, check ok. "
PROMPT = [{"role": "user", "content": "Say it with 🙂 and 北京."}]


class WordPredictor(BoundaryPredictor):
    """Style = a piece inside a word of STYLE_WORDS, judged on the whole text so far (so it works
    for one-byte tokens too); a word still being written is style while it could become one.
    Pieces without letters follow the word before them."""

    name = "words"

    async def label(self, query: SpanQuery) -> list[bool]:
        import re

        text = query.context
        labels, previous = [], False
        full = query.context + "".join(query.pieces)
        for piece in query.pieces:
            start = len(text)
            text += piece
            if re.search(r"[A-Za-z]", piece):
                word_start = start
                while word_start > 0 and full[word_start - 1].isalpha():
                    word_start -= 1
                match = re.match(r"[A-Za-z]*", full[word_start:])
                word = match.group().lower()
                at_end = word_start + len(word) == len(full)
                previous = word in STYLE_WORDS or (at_end and any(s.startswith(word) for s in STYLE_WORDS))
            labels.append(previous)
        return labels


def tokenizers(pair, request):
    if pair == "byte/byte":
        return build_byte_tokenizer(), build_byte_tokenizer()
    if pair == "qwen3/qwen3":
        tok = request.getfixturevalue("qwen3_tokenizer")
        return tok, tok
    return request.getfixturevalue("smol_tokenizer"), request.getfixturevalue("gemma_tokenizer")


def make_engine(student_tok, teacher_tok, k, fmt=None, repeat=6, **limits):
    fmt = fmt or PlainTestFormat()
    student = Party("student", ScriptedBackend(student_tok, STUDENT_SCRIPT * repeat, "student"), fmt,
                    WordPredictor(), k=k)
    teacher = Party("teacher", ScriptedBackend(teacher_tok, TEACHER_SCRIPT * repeat, "teacher"), fmt,
                    WordPredictor(), k=k)
    return Engine(student, teacher, Limits(**limits))


def run(engine, method="tessy", sample_id="s1"):
    return asyncio.run(run_method(engine, method, sample_id, PROMPT, MethodOptions(candidates=2)))


@pytest.mark.parametrize("pair", ["byte/byte", "smol/gemma", "qwen3/qwen3"])
@pytest.mark.parametrize("k", [1, 2, 3, 5, 7])
def test_tessy_spans_hold_whole_characters_at_every_step_size(pair, k, request):
    student_tok, teacher_tok = tokenizers(pair, request)
    engine = make_engine(student_tok, teacher_tok, k, max_tokens=160)
    result = run(engine)
    texts = [span.text for span in result.spans]
    assert "\ufffd" not in result.assistant_content and all("\ufffd" not in text for text in texts)
    assert "".join(texts) == result.assistant_content
    assert {span.role for span in result.spans} == {"student", "teacher"}  # both wrote, cuts happened
    # Each model's kept spans are, in order, exactly the start of its own script: nothing was lost
    # or doubled at a step boundary or a cut.
    for role, script in (("student", STUDENT_SCRIPT * 6), ("teacher", TEACHER_SCRIPT * 6)):
        written = "".join(span.text for span in result.spans if span.role == role)
        assert script.startswith(written), (role, written)
    assert result.tokens_student <= 160


@pytest.mark.parametrize("k", [1, 2, 4, 5])
def test_a_shared_vocabulary_hands_over_whole_characters(k):
    """Both models on one byte-level vocabulary: cuts land on character boundaries, so each model's
    sequence decodes to the same text as the record (the contexts never diverge inside a character)."""
    tokenizer = build_byte_tokenizer()
    engine = make_engine(tokenizer, tokenizer, k, max_tokens=200)
    assert engine.shared_vocab
    contexts: dict[str, list[int]] = {}
    for party in engine.parties.values():
        original = party.backend.generate

        async def spy(seq_id, context_ids, *args, _original=original, **kwargs):
            contexts[seq_id] = list(context_ids)
            return await _original(seq_id, context_ids, *args, **kwargs)

        party.backend.generate = spy
    result = run(engine)
    assert "\ufffd" not in result.assistant_content
    prompt_length = len(PlainTestFormat().prompt_ids(tokenizer, PROMPT))
    assert len(contexts) == 2
    for seq_id, context in contexts.items():
        seen = tokenizer.decode(context[prompt_length:])
        # Only the model's own open span may end inside a character; nothing before it is broken.
        assert "\ufffd" not in seen.rstrip("\ufffd"), (seq_id, seen)


@pytest.mark.parametrize("fmt", [PlainTestFormat(), ThinkTestFormat()], ids=["plain", "thinking"])
@pytest.mark.parametrize("method", METHODS)
def test_no_method_exceeds_its_budget(method, fmt, smol_tokenizer, gemma_tokenizer):
    engine = make_engine(smol_tokenizer, gemma_tokenizer, k=7, fmt=fmt, max_tokens=30, max_answer_tokens=10)
    result = run(engine, method)
    sections = {}
    for span in result.spans:
        sections[span.section] = sections.get(span.section, 0) + span.tokens_student
        own = (smol_tokenizer if span.role == "student" else gemma_tokenizer)
        assert span.tokens_own == len(own.encode(span.text, add_special_tokens=False)) or span.role == "student"
        if span.role == "teacher":
            assert span.tokens_student == len(smol_tokenizer.encode(span.text, add_special_tokens=False))
    assert result.tokens_student <= 30, sections
    if fmt.has_thinking:
        assert sections.get("thinking", 0) <= 20 and sections.get("answer", 0) <= 10, sections
        if "answer" not in sections:
            assert "</think>" not in result.assistant_content and result.finish_reason != "stop"
    assert "\ufffd" not in result.assistant_content


@pytest.mark.slow
def test_budget_counts_the_student_tokens_of_a_more_compact_teacher(smol_tokenizer, gemma_tokenizer):
    # Gemma (262k vocabulary) writes CJK in fewer tokens than SmolLM2 counts: a k-token step of the
    # teacher can be worth more student tokens than the budget has left; the span is trimmed.
    for max_tokens in (5, 9, 13, 17):
        engine = make_engine(smol_tokenizer, gemma_tokenizer, k=20, max_tokens=max_tokens)
        engine.parties["student"].predictor = None  # never hands over: the teacher has one turn
        engine.parties["student"].backend = ScriptedBackend(smol_tokenizer, "北京", "student")
        result = run(engine, "teacher-only")
        assert result.tokens_student <= max_tokens and result.finish_reason == "length"
        assert result.tokens_student >= max_tokens - 4  # trimmed by whole characters, not emptied


def test_a_thinking_model_and_a_plain_one_are_refused(smol_tokenizer):
    with pytest.raises(PairError, match=r"'think-test' has a thinking section.*'plain-test' has no thinking"):
        Engine(Party("student", ScriptedBackend(smol_tokenizer, "a", "s"), ThinkTestFormat(), None),
               Party("teacher", ScriptedBackend(smol_tokenizer, "a", "t"), PlainTestFormat(), None))


def test_answer_budget_must_leave_room_for_thinking(smol_tokenizer):
    with pytest.raises(ValueError, match=r"max_answer_tokens \(512\) must be less than max_tokens \(100\)"):
        make_engine(smol_tokenizer, smol_tokenizer, k=4, fmt=ThinkTestFormat(), max_tokens=100)


# ---- over an OpenAI-compatible server (token ids in and out) -----------------------------------

WIDE_STUDENT = "北京欢迎你≤∑→，。"  # three UTF-8 bytes per character: byte tokens split every one
WIDE_TEACHER = "数学证明∀∃∈∉≠中文"


class WideScriptServer:
    """A fake vLLM whose model writes a script of 3-byte characters, one byte per token, continued
    from the response so far (all prompts have one length), so `k` splits characters anywhere."""

    def __init__(self, name, script, prompt_length):
        from tests.fake_openai_server import FakeOpenAIServer

        tokenizer = build_byte_tokenizer()
        ids = tokenizer.encode(script, add_special_tokens=False)
        self.server = FakeOpenAIServer(name, decode=tokenizer.decode)
        self.server.responder = lambda prompt_ids, n: [
            ids[(len(prompt_ids) - prompt_length + i) % len(ids)] for i in range(n)]

    def __enter__(self):
        return self.server.__enter__()

    def __exit__(self, *exc):
        self.server.__exit__(*exc)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2, 4, 5])
def test_no_record_over_http_holds_a_broken_character(tmp_path, k):
    import json

    from tessy.config import ModelConfig, SynthesizeConfig
    from tessy.formats import get_format
    from tessy.records import read_records
    from tessy.runner import synthesize

    tokenizer = build_byte_tokenizer()
    tokenizer.save_pretrained(tmp_path / "byte-tokenizer")
    prompts = [{"id": f"q{i}", "prompt": f"What is 1{i} plus 1{i}?"} for i in range(4)]  # one length
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    fmt = get_format("plain", tokenizer)
    prompt_length = len(fmt.prompt_ids(tokenizer, [{"role": "user", "content": prompts[0]["prompt"]}]))
    with WideScriptServer("student", WIDE_STUDENT, prompt_length) as student, \
            WideScriptServer("teacher", WIDE_TEACHER, prompt_length) as teacher:
        common = dict(backend="openai", model="byte", tokenizer=str(tmp_path / "byte-tokenizer"), format="plain",
                      k=k, temperature=0.0, prompt_mode="token_ids")
        for method in ("tessy", "teacher-only", "teacher-think"):
            config = SynthesizeConfig(input=str(tmp_path / "prompts.jsonl"), output=str(tmp_path / method),
                                      method=method, max_tokens=40, progress=False, concurrency=2,
                                      student=ModelConfig(url=student.url, **common),
                                      teacher=ModelConfig(url=teacher.url, **common))
            report = synthesize(config)
            assert report.written == 4 and report.failed == 0, method
            for record in read_records(tmp_path / method):
                content = record["messages"][-1]["content"]
                assert "\ufffd" not in content and set(content) <= set(WIDE_STUDENT + WIDE_TEACHER), (method, content)
                assert "".join(span["text"] for span in record["spans"]) == content
                assert record["totals"]["tokens_student"] <= 40
                assert record["models"]["teacher"]["transport"] == "token_ids"
