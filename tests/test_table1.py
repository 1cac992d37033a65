"""examples/table1.py at its tiny size, end to end with real models: every stage writes its files
with the counts it promises, the report holds the four students, and a rerun skips every stage.
The result itself is not asserted (a few problems and one step say nothing about it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_models

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["student-only", "teacher-only", "tessy"]
STAGES = ["prompts", "data", "verify", "export", "sft", "own", "eval"]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def table1(out: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "examples" / "table1.py"), "--size", "tiny", "--output", str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=ROOT)


def test_table1_tiny_runs_every_stage_then_skips_them(tmp_path):
    out = tmp_path / "table1"
    done = table1(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert list(json.loads((out / "stages.json").read_text())) == STAGES

    train, heldout = lines(out / "prompts" / "train.jsonl"), lines(out / "prompts" / "heldout.jsonl")
    assert len(train) == len(heldout) == 3
    assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    assert not {r["question"] for r in train} & {r["question"] for r in heldout}  # never seen in synthesis

    for method in METHODS:
        records = lines(out / "data" / method / "records.jsonl")
        assert sorted(r["id"] for r in records) == sorted(r["id"] for r in train)
        assert all(r["method"] == method and r["totals"]["tokens_student"] <= 24 for r in records)
        assert len(lines(out / "data" / method / "verdicts-reasoning-gym.jsonl")) == 3
        export = json.loads((out / "sft-data" / method / "export.json").read_text())
        kept = sum(r["finish_reason"] == "stop" for r in records)  # the one filter: complete responses
        assert export["kept"] == kept, export
        metrics = json.loads((out / "sft" / method / "metrics.json").read_text())
        assert metrics["train_rows"] == kept
        assert metrics["steps"] == (1 if kept else 0)
        assert (out / "sft" / method / "config.json").exists() == bool(kept)  # no rows: the base model
    assert len(lines(out / "own" / "records.jsonl")) == 3

    result = json.loads((out / "table1.json").read_text())
    assert [row["student"] for row in result["students"]] == ["base", *METHODS]
    for row in result["students"]:
        assert row["problems"] == 3 and 0 <= row["passed"] <= 3
        assert len(lines(out / "eval" / row["student"] / "records.jsonl")) == 3
        assert row["own_nll"] is not None and row["own_nll"] > 0
        if row["student"] != "teacher-only":
            assert 0 <= row["vs_teacher_only"]["p"] <= 1
    assert set(result["data"]) == set(METHODS)
    assert result["data"]["teacher-only"]["teacher_share"] == 1.0
    assert result["data"]["student-only"]["teacher_share"] == 0.0
    table = (out / "table1.md").read_text()
    assert table.count("\n| ") >= 4 + 3 + len(STAGES)
    assert (out / "table1.png").stat().st_size > 1000

    again = table1(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("skipped") == len(STAGES)
