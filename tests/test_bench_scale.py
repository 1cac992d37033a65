"""bench/bench_scale.py's core at a tiny size: 200 prompts, 64 in flight, against fake servers in
their own processes; every prompt written exactly once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_http import fake_servers, server_specs  # noqa: E402
from bench_scale import run_scale, slope_mb_per_1000  # noqa: E402


def test_slope():
    assert slope_mb_per_1000([(0, 100.0), (1000, 101.0), (2000, 102.0)]) == 1.0
    assert slope_mb_per_1000([(0, 100.0), (1000, 100.0), (2000, 100.0)]) == 0.0
    assert slope_mb_per_1000([(0, 100.0)]) is None


@pytest.mark.server
def test_run_scale_tiny(tmp_path):
    with fake_servers(*server_specs(stop_at=60)) as urls:
        result = run_scale(urls, tmp_path, 200, 64)
        ids = [json.loads(line)["id"] for line in open(tmp_path / "run" / "records.jsonl")]
        assert sorted(ids) == sorted(f"p{i}" for i in range(200))  # each prompt once, none twice
        assert result["written"] == result["records"] == 200
        assert result["failed"] == result["duplicates"] == result["missing"] == 0
        assert result["exactly_once"] is True
        assert result["steps"] >= 200 and result["steps_per_s"] > 0
        assert result["rss_samples"][-1][1] == 200  # the sampler counted every record line
        assert result["peak_anon_mb"] >= result["anon_before_mb"] > 0 and result["peak_rss_mb"] > 0
