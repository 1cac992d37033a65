"""Records: schema validation, exactly-once appends, torn-line repair, resume, fingerprints."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest

from tessy.records import (
    FAILURES_FILE,
    RECORDS_FILE,
    REJECTS_FILE,
    RUN_FILE,
    RunMismatchError,
    RunOutput,
    config_fingerprint,
    read_records,
    summarize,
    validate_record,
)

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
        "id": id, "method": "tessy",
        "messages": [{"role": "user", "content": "What is 2 + 2?"},
                     {"role": "assistant", "content": "".join(s["text"] for s in sp)}],
        "spans": sp,
        "totals": {"spans": len(sp), "tokens_student": tok, "teacher_tokens_student": ttok,
                   "teacher_share": ttok / tok if tok else 0.0,
                   "thinking_teacher_share": (sum(s["tokens_student"] for s in think
                                                  if s["role"] == "teacher") / think_tok
                                              if think_tok else None),
                   "generated": sum(s["generated"] for s in sp),
                   "discarded": sum(s["discarded"] for s in sp)},
        "finish_reason": finish_reason,
        "timings": {"wall_s": 1.5, "generate_s": {"teacher": 0.5, "student": 0.7},
                    "predict_s": 0.2},
        "models": {"teacher": {"model": "gemma3-270m", "format": "gemma3", "predictor": "lexicon"},
                   "student": {"model": "smollm2", "format": "chatml", "predictor": "lexicon"}},
        "config_fingerprint": FP, "tessy_version": "0.1.0",
    }


# ---------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_short():
    a = config_fingerprint({"k": 20, "teacher": "t", "nested": {"b": 1, "a": 2}})
    b = config_fingerprint({"nested": {"a": 2, "b": 1}, "teacher": "t", "k": 20})
    assert a == b and len(a) == 16 and int(a, 16) >= 0
    assert config_fingerprint({"k": 21, "teacher": "t", "nested": {"b": 1, "a": 2}}) != a
    # fields that do not shape the data are ignored
    assert config_fingerprint({**CONFIG, "concurrency": 64, "output": "/x"}) == FP


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
])
def test_invalid_record_names_field(mutate, field):
    r = make_record()
    mutate(r)
    with pytest.raises(ValueError, match=re.escape(f"'{field}'")):
        validate_record(r)


# ---------------------------------------------------------------------------- writing


def test_write_and_read_back(tmp_path):
    out = RunOutput(tmp_path / "run", FP, CONFIG)
    assert out.write_record(make_record("a"))
    assert out.write_record(make_record("b"))
    out.close()
    meta = json.loads((tmp_path / "run" / RUN_FILE).read_text())
    assert meta["fingerprint"] == FP and meta["config"] == CONFIG
    recs = list(read_records(tmp_path / "run" / RECORDS_FILE))
    assert [r["id"] for r in recs] == ["a", "b"]
    assert recs[0] == make_record("a")
    assert [r["id"] for r in read_records(tmp_path / "run")] == ["a", "b"]  # folder works too


def test_no_duplicate_on_double_write(tmp_path):
    with RunOutput(tmp_path, FP, CONFIG) as out:
        assert out.write_record(make_record("a")) is True
        assert out.write_record(make_record("a")) is False
        assert out.is_done("a") and out.done_ids == {"a"}
    with RunOutput(tmp_path, FP, CONFIG) as out:  # and across a rerun
        assert out.write_record(make_record("a")) is False
        assert out.write_record(make_record("b")) is True
    lines = (tmp_path / RECORDS_FILE).read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_invalid_record_not_written(tmp_path):
    with RunOutput(tmp_path, FP, CONFIG) as out:
        bad = make_record("x")
        bad["finish_reason"] = "nope"
        with pytest.raises(ValueError, match="finish_reason"):
            out.write_record(bad)
        assert not out.is_done("x")
    assert (tmp_path / RECORDS_FILE).read_text() == ""


def test_torn_last_line_repaired(tmp_path, caplog):
    with RunOutput(tmp_path, FP, CONFIG) as out:
        out.write_record(make_record("a"))
        out.write_record(make_record("b"))
    path = tmp_path / RECORDS_FILE
    good = path.read_bytes()
    torn = json.dumps(make_record("c")).encode()[:57]  # a crash mid-write
    path.write_bytes(good + torn)
    assert [r["id"] for r in read_records(path)] == ["a", "b"]  # readers tolerate it
    with caplog.at_level("WARNING", logger="tessy.records"):
        out = RunOutput(tmp_path, FP, CONFIG)
    assert "torn" in caplog.text
    assert path.read_bytes() == good
    assert out.done_ids == {"a", "b"} and not out.is_done("c")
    assert out.write_record(make_record("c"))
    out.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["a", "b", "c"]


def test_complete_last_line_without_newline_kept(tmp_path):
    (tmp_path / RECORDS_FILE).write_text(json.dumps(make_record("a")))
    with RunOutput(tmp_path, FP, CONFIG) as out:
        assert out.done_ids == {"a"}
        out.write_record(make_record("b"))
    assert [r["id"] for r in read_records(tmp_path)] == ["a", "b"]


def test_corrupt_middle_line_raises(tmp_path):
    (tmp_path / RECORDS_FILE).write_text('{"id": "a"}\n{oops\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2"):
        list(read_records(tmp_path))


def test_kill_9_mid_run_leaves_whole_records(tmp_path):
    """A writer killed abruptly leaves only whole lines or one torn tail, which reopen repairs."""
    script = f"""
import sys
sys.path.insert(0, {str(os.path.dirname(__file__) + '/..')!r})
from tests.test_records import make_record, FP, CONFIG
from tessy.records import RunOutput
out = RunOutput({str(tmp_path)!r}, FP, CONFIG)
for i in range(100000):
    out.write_record(make_record(f"id{{i}}"))
"""
    proc = subprocess.Popen([sys.executable, "-c", script])
    path = tmp_path / RECORDS_FILE
    import time
    deadline = time.time() + 10
    while time.time() < deadline and (not path.exists() or path.stat().st_size < 20000):
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    with RunOutput(tmp_path, FP, CONFIG) as out:
        n = len(out.done_ids)
        assert n > 0
        assert out.write_record(make_record("after"))
    ids = [r["id"] for r in read_records(tmp_path)]
    assert ids == [f"id{i}" for i in range(n)] + ["after"]


def test_fingerprint_mismatch(tmp_path):
    with RunOutput(tmp_path, FP, CONFIG) as out:
        out.write_record(make_record("a"))
    other = {**CONFIG, "k": 32}
    with pytest.raises(RunMismatchError, match="another config.*new output folder.*overwrite"):
        RunOutput(tmp_path, config_fingerprint(other), other)
    # overwrite=True starts afresh
    with RunOutput(tmp_path, config_fingerprint(other), other, overwrite=True) as out:
        assert out.done_ids == set()
    assert json.loads((tmp_path / RUN_FILE).read_text())["config"]["k"] == 32
    assert not (tmp_path / RECORDS_FILE).read_text()


def test_folder_lock(tmp_path):
    out = RunOutput(tmp_path, FP, CONFIG)
    try:
        code = ("import sys; from tessy.records import RunOutput, RunLockedError\n"
                f"try:\n RunOutput({str(tmp_path)!r}, {FP!r}, {{}})\n"
                "except RunLockedError: sys.exit(3)\n")
        assert subprocess.run([sys.executable, "-c", code]).returncode == 3
    finally:
        out.close()
    RunOutput(tmp_path, FP, CONFIG).close()  # released


def test_failures_and_retries(tmp_path):
    with RunOutput(tmp_path, FP, CONFIG) as out:
        out.write_failure("x", "TimeoutError: server", 1)
        out.write_failure("x", "TimeoutError: server", 2)
        out.write_failure("y", "ValueError", 1)
        assert out.failed_attempts("x") == 2 and out.failed_attempts("z") == 0
    with RunOutput(tmp_path, FP, CONFIG) as out:
        assert out.failed_attempts("x") == 2 and out.failed_attempts("y") == 1
        assert out.failed_ids == {"x", "y"}
        out.write_record(make_record("y"))  # the retry of y succeeded
        assert out.failed_ids == {"x"}
    rows = [json.loads(x) for x in (tmp_path / FAILURES_FILE).read_text().splitlines()]
    assert rows[0]["id"] == "x" and rows[0]["attempt"] == 1 and "time" in rows[0]


def test_rejects_logged_once(tmp_path):
    for _ in range(2):  # a rerun re-reads the input and rejects the same lines
        with RunOutput(tmp_path, FP, CONFIG) as out:
            out.write_reject(3, "line 3: malformed JSON")
            out.write_reject(7, "line 7: duplicate id 'q'", id="q")
    rows = [json.loads(x) for x in (tmp_path / REJECTS_FILE).read_text().splitlines()]
    assert [(r["line"], r["id"]) for r in rows] == [(3, None), (7, "q")]


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
