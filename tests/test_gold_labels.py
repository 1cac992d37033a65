"""The hand-labelled style segments (tests/data/gold_style_segments.jsonl) and the predictors
scored against them.

36 segments of thinking text written by the Qwen2.5-Coder pair (the 0.5B student in the
think-aloud voice, the 1.5B teacher, and TESSY records of both), cut at sentence boundaries and
labelled by hand: a style span is a sentence-initial discourse marker or a phrase that narrates
or sets up the work ("Okay, let's look at the function.", "Then,", "Here's the code:"), not
connectives inside a step ("then filter out ..."). They keep the lexicon's evaluation honest:
its own labels would score it perfect.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessy.predictor_training.config import EvalConfig
from tessy.predictor_training.evaluate import evaluate

GOLD = Path(__file__).parent / "data" / "gold_style_segments.jsonl"


def test_the_gold_file_is_a_valid_annotation_set():
    rows = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 36 and len({r["segment_id"] for r in rows}) == 36
    assert {r["role"] for r in rows} == {"student", "teacher"}
    for row in rows:
        assert [row["text"][a:b] for a, b in row["spans"]] == row["span_texts"]
        assert all(a < b for a, b in row["spans"])
    assert sum(len(r["spans"]) for r in rows) >= 15


def test_predictors_scored_against_hand_labels(smol_tokenizer):
    # The segments' own tokenizer is Qwen's (a real-model load); SmolLM2's cuts the same text into
    # pieces just as well for scoring.
    results = evaluate(EvalConfig(data=str(GOLD), split="all", tokenizer="smollm2-135m-instruct",
                                  predictors=f"lexicon,chance,gold=annotations:{GOLD}"))
    scores = {name: p["token"] for name, p in results["predictors"].items()}
    assert scores["gold"]["f1"] == pytest.approx(1.0)  # the protocol reads the labels back exactly
    assert scores["lexicon"]["f1"] > scores["chance"]["f1"] + 0.3
    assert scores["lexicon"]["precision"] > 0.7  # what the lexicon calls style mostly is
    assert 0.02 < results["style_rate"] < 0.10
