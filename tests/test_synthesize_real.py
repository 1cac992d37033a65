"""TESSY end to end with the two real demo models on CPU (SmolLM2-135M student, Gemma-3-270m
teacher, lexicon predictors): spans alternate, cuts follow the predictors' verdicts, the final
answer is the student's, and the CLI resumes after kill -9 with nothing lost or duplicated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tessy.config import SynthesizeConfig
from tessy.formats import get_format
from tessy.formats.base import ChatFormat

pytestmark = pytest.mark.real_models

PROBLEMS = [
    "Tom has 3 apples and buys 4 more. How many apples does he have now?",
    "A train travels 60 km in one hour. How far does it travel in 3 hours?",
]


@pytest.fixture(scope="module")
def parties():
    from tessy.runner import load_party

    config = SynthesizeConfig()
    return {role: load_party(role, getattr(config, role)) for role in ("student", "teacher")}


def make_engine(parties, **limits):
    from tessy.engine import Engine, Limits

    return Engine(parties["student"], parties["teacher"], Limits(**limits), seed=1, trace=True)


def run(engine, prompt, sample_id="p"):
    return asyncio.run(engine.run(sample_id, [{"role": "user", "content": prompt}]))


def test_real_pair_alternates_and_cuts_at_verdicts(parties):
    engine = make_engine(parties, max_tokens=96)
    assert not engine.shared_vocab  # the hard case: different tokenizers
    spans_seen = 0
    for index, problem in enumerate(PROBLEMS):
        result = run(engine, problem, f"p{index}")
        roles = [span.role for span in result.spans]
        assert all(a != b for a, b in zip(roles, roles[1:])), roles
        spans_seen += len(roles)
        assert result.assistant_content == "".join(span.text for span in result.spans)
        assert result.tokens_student <= 96  # the budget is a promise, in the student's tokens
        assert "\ufffd" not in result.assistant_content
        for step in result.trace:
            labels, keep_in_step = step["labels"], step["keep"] - step["span_start"]
            if step["cut"] is None or step["forced"]:
                continue
            wanted_style = step["role"] == "student"
            # Everything kept from this step has the role's kind; the cut is at (or, after the
            # word back-off, before) the first token of the other kind.
            assert all(label == wanted_style for label in labels[: max(keep_in_step, 0)])
            assert labels[step["cut"]] != wanted_style
            assert step["keep"] <= step["span_start"] + step["cut"]
        assert result.finish_reason in {"stop", "length", "repetition", "max_spans", "context"}
    assert spans_seen >= 2


class ParagraphThinking(ChatFormat):
    """Test format: the demo models have no thinking section, so a paragraph break ends the
    'thinking' — something both real models write on their own."""

    has_thinking = True
    answer_opener = "\n\n"

    def __init__(self, inner: ChatFormat):
        self.inner = inner
        self.name = f"paragraph-{inner.name}"
        self.end_of_turn_tokens = inner.end_of_turn_tokens

    def prompt_text(self, tokenizer, messages):
        return self.inner.prompt_text(tokenizer, messages)

    def find_thinking_end(self, text):
        position = text.find("\n\n", 1)
        return None if position < 0 else position


def test_real_pair_final_answer_is_students(parties):
    import copy

    student, teacher = copy.copy(parties["student"]), copy.copy(parties["teacher"])
    student.format = ParagraphThinking(get_format("auto", student.tokenizer))
    teacher.format = ParagraphThinking(get_format("auto", teacher.tokenizer))
    engine = make_engine({"student": student, "teacher": teacher}, max_tokens=160, max_answer_tokens=24)
    result = run(engine, PROBLEMS[0])
    if result.finish_reason in {"length", "max_spans"} and not any(s.section == "answer" for s in result.spans):
        pytest.skip("the models never ended a paragraph within the budget")
    answer = [span for span in result.spans if span.section == "answer"]
    assert answer and all(span.role == "student" for span in answer)
    thinking = "".join(span.text for span in result.spans if span.section == "thinking")
    assert result.assistant_content == thinking + "\n\n" + answer[0].text


def _run_cli(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "tessy.cli.main", "synthesize", *args], **kwargs)


def test_cli_resumes_after_kill_and_rejects_bad_lines(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i + 1}? Think step by step."}) for i in range(5)]
    lines.insert(2, "{not json")
    prompts.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    args = ["--input", str(prompts), "--output", str(out), "--max-tokens", "40", "--concurrency", "2", "--no-progress"]
    records = out / "records.jsonl"
    first = _run_cli(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and first.poll() is None:
        if records.exists() and records.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    if first.poll() is None:
        first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = records.read_text().count("\n") if records.exists() else 0
    second = _run_cli(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr
    ids = [json.loads(line)["id"] for line in records.read_text().splitlines()]
    assert sorted(ids) == [f"q{i}" for i in range(5)]  # every prompt exactly once
    assert done_before < 5 or "skipped 5" in stdout
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 1 and rejects[0]["line"] == 3 and "line 3" in rejects[0]["reason"]
