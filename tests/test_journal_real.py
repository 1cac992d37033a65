"""Mid-trace resume with the real demo pair (SmolLM2-135M student, Gemma-3-270m teacher, on CPU):
`tessy synthesize` is killed with SIGKILL while long samples are half written; the rerun writes
every prompt once and generates far fewer tokens than starting them over would.

"Starting over" is measured by the records themselves: `totals.generated` counts both processes,
and a sample run from scratch with the same per-turn seeds generates that many (by hand, a rerun
of a copy of the killed folder without its journal wrote the same record: 254 tokens generated,
against 24 by the resumed rerun)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.real_models

# With seed 1 the demo pair writes the last one to the 256-token budget (the others stop early).
PROMPTS = [
    "Explain in detail, step by step, how to multiply 37 by 46 by hand. Then check the answer a second way and "
    "explain every step.",
    "Write a long, careful explanation of how a binary search works, with an example on a sorted list of ten "
    "numbers, step by step.",
    "A farmer has 17 sheep, buys 25 more, sells 9 and then doubles his flock. Think out loud step by step and "
    "explain every calculation in detail.",
]


def test_kill_9_during_long_samples_then_the_rerun_resumes_them(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"long{i}", "prompt": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = tmp_path / "run"
    args = [sys.executable, "-m", "tessy.cli.main", "synthesize", "--input", str(prompts), "--output", str(out),
            "--max-tokens", "160", "--concurrency", "3", "--seed", "1", "--no-progress"]
    journal = out / "journal.jsonl"
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:
        lines = [json.loads(line) for line in journal.read_text().splitlines()] if journal.exists() else []
        if max([line.get("generated", 0) for line in lines], default=0) >= 64:  # well into a long sample
            break
        time.sleep(0.5)
    assert first.poll() is None, "the first run ended before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert sorted(record["id"] for record in records) == ["long0", "long1", "long2"]  # each prompt exactly once
    generated_now = int(re.search(r"; (\d+) tokens generated\)", rerun.stdout).group(1))
    resumed = [record for record in records if "resumed" in record]
    assert resumed and f"resumed {len(resumed)} samples mid-trace" in rerun.stdout
    skipped = re.search(r"skipped (\d+) prompts already done", rerun.stdout)
    rerun_ids = {record["id"] for record in records[int(skipped.group(1)) if skipped else 0:]}
    from_scratch = sum(record["totals"]["generated"] for record in records if record["id"] in rerun_ids)
    before = sum(record["resumed"]["tokens"] for record in resumed)
    assert generated_now == from_scratch - before
    assert before > 0 and generated_now < 0.7 * from_scratch, (generated_now, from_scratch)
    assert journal.read_text() == ""  # a finished run leaves no live lines
