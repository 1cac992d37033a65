"""The record schema (tessy.records): validation names the bad field, the README's table is the
schema's own, records built by the engine validate, statistics come from records alone."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from tessy.records import schema_markdown, summarize, validate_record
from tessy.store import config_fingerprint

CONFIG = {"teacher": "gemma3-270m", "student": "smollm2-135m-instruct", "k": 20, "seed": 0}
FP = config_fingerprint(CONFIG)


def make_record(id: str = "a", spans=None, finish_reason: str = "stop") -> dict:
    """A valid record whose totals agree with its spans."""
    if spans is None:
        spans = [("student", "thinking", "Okay, let's see. ", 5),
                 ("teacher", "thinking", "2 + 2 = 4 & <b>done</b>", 9),
                 ("student", "answer", "The answer is 4.", 6)]
    sp = [{"role": r, "section": sec, "text": text, "tokens_student": n, "tokens_own": n + 1,
           "generated": 20, "discarded": 20 - n - 1, "forced": False}
          for r, sec, text, n in spans]
    tok = sum(s["tokens_student"] for s in sp)
    ttok = sum(s["tokens_student"] for s in sp if s["role"] == "teacher")
    think = [s for s in sp if s["section"] == "thinking"]
    think_tok = sum(s["tokens_student"] for s in think)
    return {
        "id": id, "method": "tessy", "prompt_sha256": "0" * 64,
        "messages": [{"role": "user", "content": "What is 2 + 2?"},
                     {"role": "assistant", "content": "".join(s["text"] for s in sp)}],
        "spans": sp,
        "totals": {"spans": len(sp), "tokens_student": tok, "teacher_tokens_student": ttok,
                   "teacher_share": ttok / tok if tok else 0.0,
                   "thinking_teacher_share": (sum(s["tokens_student"] for s in think
                                                  if s["role"] == "teacher") / think_tok
                                              if think_tok else None),
                   "generated": sum(s["generated"] for s in sp),
                   "discarded": sum(s["discarded"] for s in sp), "steps": 3},
        "finish_reason": finish_reason,
        "timings": {"wall_s": 1.5, "generate_s": {"teacher": 0.5, "student": 0.7},
                    "predict_s": 0.2},
        "models": {"teacher": {"model": "gemma3-270m", "format": "plain", "predictor": "lexicon",
                               "transport": "in_process"},
                   "student": {"model": "smollm2", "format": "plain", "predictor": "lexicon",
                               "transport": "in_process"}},
        "config_fingerprint": FP, "tessy_version": "0.1.0",
    }


# ---------------------------------------------------------------------------- validation


def test_valid_record_passes():
    validate_record(make_record())


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r.pop("id"), "id"),
    (lambda r: r.update(id=3), "id"),
    (lambda r: r["messages"].pop(), "messages"),
    (lambda r: r["messages"][-1].update(role="user"), "messages[1].role"),
    (lambda r: r["spans"][0].update(role="oracle"), "spans[0].role"),
    (lambda r: r["spans"][1].update(section="preface"), "spans[1].section"),
    (lambda r: r["spans"][0].update(tokens_student=-1), "spans[0].tokens_student"),
    (lambda r: r["spans"][0].update(forced="no"), "spans[0].forced"),
    (lambda r: r["spans"][0].update(generated=True), "spans[0].generated"),
    (lambda r: r["totals"].update(teacher_share=1.5), "totals.teacher_share"),
    (lambda r: r["totals"].update(spans=7), "totals.spans"),
    (lambda r: r["totals"].update(tokens_student=1), "totals.tokens_student"),
    (lambda r: r["totals"].update(teacher_tokens_student=0), "totals.teacher_tokens_student"),
    (lambda r: r.update(finish_reason="tired"), "finish_reason"),
    (lambda r: r["timings"]["generate_s"].update(teacher=-1.0), "timings.generate_s.teacher"),
    (lambda r: r["timings"]["generate_s"].update(oracle=1.0), "timings.generate_s.oracle"),
    (lambda r: r["models"].pop("teacher"), "models.teacher"),
    (lambda r: r["models"]["student"].update(model=None), "models.student.model"),
    (lambda r: r.pop("prompt_sha256"), "prompt_sha256"),
    (lambda r: r["totals"].pop("steps"), "totals.steps"),
    (lambda r: r["models"]["teacher"].pop("transport"), "models.teacher.transport"),
])
def test_invalid_record_names_field(mutate, field):
    r = make_record()
    mutate(r)
    with pytest.raises(ValueError, match=re.escape(f"'{field}'")):
        validate_record(r)




def test_readme_shows_the_schema_of_the_code():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    start, end = "<!-- record-schema:start -->\n", "\n<!-- record-schema:end -->"
    assert start in readme and end in readme, "README lost its record-schema markers"
    shown = readme.split(start, 1)[1].split(end, 1)[0]
    assert shown == schema_markdown(), "README's record table differs from tessy.records; paste schema_markdown()"


def test_summarize():
    recs = [make_record("a"),
            make_record("b", finish_reason="length",
                        spans=[("teacher", "response", "x", 3), ("student", "response", "y", 1)])]
    s = summarize(recs)
    assert s["count"] == 2
    assert s["mean_teacher_share"] == pytest.approx((9 / 20 + 3 / 4) / 2)
    assert s["overall_teacher_share"] == pytest.approx(12 / 24)
    assert s["finish_reasons"] == {"stop": 1, "length": 1}
    assert summarize([])["count"] == 0 and summarize([])["mean_teacher_share"] is None
    assert copy.deepcopy(recs) == recs  # summarize does not mutate
