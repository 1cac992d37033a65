"""All eight data methods on the real CPU demo pair (SmolLM2-135M student, Gemma-3-270m teacher)
at tiny size: each writes a valid record with the authors its method promises."""

from __future__ import annotations

import json

import pytest

from tessy.config import SynthesizeConfig
from tessy.methods import METHODS

pytestmark = pytest.mark.real_models


@pytest.fixture(scope="module")
def parties():
    from tessy.runner import load_party

    config = SynthesizeConfig()
    return {role: load_party(role, getattr(config, role)) for role in ("student", "teacher")}


def test_all_methods_on_the_demo_pair(tmp_path, parties):
    from tessy.runner import build_engine, synthesize

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "prompt": "Write a Python function that adds two numbers."}) + "\n")
    authors = {}
    for method in METHODS:
        config = SynthesizeConfig(input=str(prompts), output=str(tmp_path / method), method=method, max_tokens=16,
                                  candidates=2, progress=False, seed=3)
        report = synthesize(config, engine=build_engine(config, parties))
        assert report.written == 1 and report.failed == 0, (method, (tmp_path / method / "failures.jsonl").read_text())
        record = json.loads((tmp_path / method / "records.jsonl").read_text())
        assert record["method"] == method and record["messages"][0]["content"].startswith("Write a Python")
        assert record["messages"][-1]["content"] == "".join(span["text"] for span in record["spans"])
        authors[method] = [(span["role"], span["section"]) for span in record["spans"]]
        if method == "teacher-score":
            assert len(record["scores"]) == 2 and record["chosen"] in (0, 1)
        if method == "teacher-reference":
            assert "Reference answer" not in record["messages"][0]["content"] and "text" in record["reference"]
    assert set(authors["student-only"]) <= {("student", "response")}
    assert set(authors["teacher-only"]) <= {("teacher", "response")}
    assert authors["teacher-think"][0] == ("teacher", "thinking")
    assert authors["teacher-answer"][0] == ("student", "thinking")
    assert all(role == "student" for role, _ in authors["teacher-score"] + authors["teacher-reference"])
