"""`tessy demo`, the README's first command, at a tiny size: real models, real HumanEval prompts,
records that validate, a view that shows both models, and a rerun that redoes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_models


def demo(folder, *extra):
    return subprocess.run(
        [sys.executable, "-m", "tessy.cli.main", "demo", "--output", str(folder), "--problems", "2",
         "--max-tokens", "32", "--no-progress", *extra],
        capture_output=True, text=True, timeout=600,
    )


def test_demo_writes_valid_records_and_a_view_then_resumes(tmp_path):
    from tessy.records import read_records, validate_record

    done = demo(tmp_path / "demo")
    assert done.returncode == 0, done.stdout + done.stderr
    records = list(read_records(tmp_path / "demo" / "run" / "records.jsonl"))
    assert sorted(r["id"] for r in records) == ["HumanEval/0", "HumanEval/1"]
    for record in records:
        validate_record(record)
        assert record["totals"]["tokens_student"] <= 32
        assert "\ufffd" not in record["messages"][-1]["content"]
    view = (tmp_path / "demo" / "view.html").read_text(encoding="utf-8")
    assert "HumanEval/0" in view and "HumanEval/1" in view
    assert "view.html" in done.stdout and "records.jsonl" in done.stdout

    again = demo(tmp_path / "demo")
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list(read_records(tmp_path / "demo" / "run" / "records.jsonl"))) == 2  # nothing redone
