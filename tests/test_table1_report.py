"""examples/table1_report.py: the statistics of the Table 1 report and the data's diagnosis, on
records built here (the whole report, from real stages, is tests/test_table1.py's)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import table1_report  # noqa: E402


def test_mcnemar_is_the_exact_two_sided_sign_test():
    assert table1_report.mcnemar_p(0, 0) == 1.0
    assert table1_report.mcnemar_p(5, 5) == 1.0
    assert table1_report.mcnemar_p(0, 5) == pytest.approx(2 / 32)  # all five one way: 2 x 0.5^5
    assert table1_report.mcnemar_p(1, 9) == pytest.approx(2 * 11 / 1024)
    assert table1_report.mcnemar_p(12, 33) == table1_report.mcnemar_p(33, 12) < 0.01


def record(id_, *spans):
    return {"id": id_, "spans": [{"role": role, "section": section, "text": text} for role, section, text in spans]}


def verdict(id_, passed, expected="1120"):
    return {"id": id_, "status": "pass" if passed else "fail", "expected": expected}


def test_the_diagnosis_says_where_the_data_is_right_or_lost():
    records = [
        # the student opens, the teacher reasons to the right product, the student's answer keeps it
        record("a", ("student", "thinking", "Okay, let's see."), ("teacher", "thinking", " 20 * 56 = 1120."),
               ("student", "answer", "The final answer is 1120.")),
        # right thinking, but the answer section loses it
        record("b", ("student", "thinking", "Let's"), ("teacher", "thinking", " compute: 1,120"),
               ("student", "thinking", " So,"), ("teacher", "thinking", " done."),
               ("student", "answer", "The final answer is 700.")),
        # the teacher alone in the thinking, wrong; the answer right anyway
        record("c", ("teacher", "thinking", "It is 1100"), ("student", "answer", "1120")),
        # a whitespace-only student span is no turn taken
        record("d", ("student", "thinking", " "), ("teacher", "thinking", "no number")),
    ]
    records[1]["spans"][2]["forced"] = True  # b's " So," was forced: hand-overs had gone empty
    verdicts = [verdict("a", True), verdict("b", False), verdict("c", True), verdict("d", False)]
    teacher_only = {"a": True, "b": True, "c": False, "d": True, "unrelated": True}
    found = table1_report.diagnose_data(records, verdicts, teacher_only)
    assert found["thinking_right"] == 2  # a, and b's 1,120 read as 1120
    assert found["answer_lost"] == 1 and found["answer_rescued"] == 1
    assert found["vs_teacher_only"] == {"gained": 1, "lost": 2, "p": 1.0}  # c gained; b, d lost
    assert found["by_student_spans"] == {"0": [2, 1, 1], "1": [1, 1, 1], "2": [1, 0, 1]}
    assert found["by_forced_span"] == {"none": [3, 2, 2], "student": [1, 0, 1], "teacher": [0, 0, 0]}
    assert found["by_student_opening"] == {"Okay,": [1, 1], "Let's": [1, 0]}


def test_a_record_without_a_verdict_is_left_out_not_counted_wrong():
    found = table1_report.diagnose_data([record("x", ("teacher", "thinking", "1120"))], [], {})
    assert found["thinking_right"] == 0 and found["by_student_spans"] == {}
