"""bench/bench_servers.py runs end to end on its GPU-sim servers (no models; the demo tokenizers),
and its figures are internally consistent: every prompt has a record in every method, the
lock-step run took steps, generate-then-cut never generates less than streaming stopped at the
cut on the same scripted servers, and each server's CPU share says which servers worked;
`--repeat` keeps every round's figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parent.parent


def test_bench_servers_on_gpu_sim_servers(tmp_path):
    out = tmp_path / "servers.json"
    command = [sys.executable, "bench/bench_servers.py", "--servers", "gpu-sim", "--prompts", "4", "--concurrency", "4",
               "--max-tokens", "64", "--methods", "tessy,lockstep,teacher-only", "--repeat", "2",
               "--out", str(out)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"tessy", "lockstep", "teacher-only"}
    assert all(row["samples"] == 4 and row["failed"] == 0 and row["kept_tokens"] > 0 for row in rows.values())
    assert rows["lockstep"]["lockstep_steps"] > 0 and rows["tessy"]["lockstep_steps"] is None
    # the scripted servers write the same text for every method: the paper's cut generates more
    assert rows["lockstep"]["generated_per_kept"] >= rows["tessy"]["generated_per_kept"]
    assert rows["teacher-only"]["teacher_share"] == 1.0
    # each server's CPU share: teacher-only leaves the student's server idle; tessy asks both
    only = rows["teacher-only"]
    assert only["teacher_server_busy"] > only["student_server_busy"] >= 0.0, only
    assert rows["tessy"]["student_server_busy"] > 0.0 and rows["tessy"]["teacher_server_busy"] > 0.0
    # the servers said what the prompts cost (usage on every streamed event, even when closed early)
    assert all(row["prompt_reported"] > 0 for row in rows.values())
    assert rows["tessy"]["prompt_processed_per_kept"] < rows["tessy"]["prompt_sent_per_kept"]
    assert "vs lockstep" in run.stdout
    # two rounds: each method's median run, every run's figure, its ratio to the lock step per round
    assert all(len(row["kept_per_min_runs"]) == 2 and row["kept_per_min"] in row["kept_per_min_runs"]
               for row in rows.values())
    assert rows["lockstep"]["vs_lockstep_runs"] == [1.0, 1.0] and len(rows["tessy"]["vs_lockstep_runs"]) == 2
