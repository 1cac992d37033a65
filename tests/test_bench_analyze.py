"""bench/bench_analyze.py at a tiny size: its synthetic data is deterministic and shaped like real
records, and one size analysed in a child process gives every figure the RESULTS table quotes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_analyze import main, table, write_runs  # noqa: E402

STEPS = {"imports", "load", "read_count", "words", "tfidf", "similarity_pca", "report"}


def test_synthetic_runs_are_deterministic(tmp_path):
    first, second = write_runs(tmp_path / "a", 20, seed=3), write_runs(tmp_path / "b", 20, seed=3)
    texts = [(run / "records.jsonl").read_text() for run in first]
    assert texts == [(run / "records.jsonl").read_text() for run in second]
    assert texts != [(run / "records.jsonl").read_text() for run in write_runs(tmp_path / "c", 20, seed=4)]
    records = [json.loads(line) for line in texts[1].splitlines()]
    assert [r["id"] for r in records] == [f"p{i}" for i in range(10)] and {r["method"] for r in records} == {"tessy"}
    assert all(r["messages"][-1]["content"] == "".join(s["text"] for s in r["spans"]) for r in records)
    assert 0 < records[0]["totals"]["teacher_share"] < 1


def test_bench_at_a_tiny_size(tmp_path):
    out = tmp_path / "analyze.json"
    assert main(["--sizes", "40", "--output", str(out), "--work", str(tmp_path / "work")]) == 0
    data = json.loads(out.read_text())
    assert {"date", "uptime_at_start", "load_at_start", "load_at_end", "cpus", "runs"} <= set(data)
    (run,) = data["runs"]
    assert run["responses"] == 40 and run["nonzeros"] > 0 and run["vocabulary_size"] == run["words_seen"] > 0
    assert set(run["steps"]) == STEPS and all(step["s"] >= 0 for step in run["steps"].values())
    assert run["peak_rss_mb"] >= run["fixed_rss_mb"] > 0 and run["wall_s"] > 0
    assert len(run["explained_variance"]) == 2 and 0 < run["similarity_to_student"] < 1
    assert (tmp_path / "work" / "40" / "report" / "report.html").exists()
    assert table(data["runs"]).count("\n") == 2  # header, rule, one row
