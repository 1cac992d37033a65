"""The README's first command shows the method: `tessy demo`, exactly as `make demo` runs it (the
default Qwen2.5-Coder pair, 8 HumanEval problems, into `demo-output/`), takes turns for real.

The demo is run here unless `demo-output/` already holds its finished run (a rerun of the demo skips
what is done, so this costs seconds then; on a fresh clone it is the demo itself, several minutes).
Asserted on its own records: in at least 6 of the 8 samples both models wrote in the thinking,
the teacher's share of all tokens is between 50% and 90%, no sample ended by repetition, and every
record keeps the invariants (budget, whole characters, a prompt without the voice's preamble)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real_models

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run():
    done = subprocess.run([sys.executable, "-m", "tessy.cli.main", "demo", "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_the_default_demo_takes_turns(demo_run):
    from tessy.cli.demo import DEFAULT_PAIR, PAIRS, summarize
    from tessy.records import read_records, validate_record

    records = list(read_records(ROOT / "demo-output" / "run" / "records.jsonl"))
    assert len(records) == 8
    shown = summarize(records)
    assert shown["section"] == "thinking"
    assert shown["took_turns"] >= 6, shown
    assert 0.5 <= shown["teacher_share"] <= 0.9, shown
    assert "repetition" not in shown["finish_reasons"], shown
    budget = PAIRS[DEFAULT_PAIR].max_tokens
    for record in records:
        validate_record(record)
        content = record["messages"][-1]["content"]
        assert record["totals"]["tokens_student"] <= budget
        assert "\ufffd" not in content and content.startswith("<think>\n")
        position = 0
        for span in record["spans"]:  # the spans are the content, in order, around the thinking markers
            position = content.index(span["text"], position) + len(span["text"])
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]  # no voice preamble
    # What it prints is what the records say.
    assert f"in {shown['took_turns']} of 8 samples both models wrote in the thinking" in demo_run
    assert f"teacher share {shown['teacher_share']:.1%}" in demo_run
    assert "view.html" in demo_run
    assert (ROOT / "demo-output" / "view.html").stat().st_size > 1000
