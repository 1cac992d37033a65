"""Boundary predictors: `lexicon` (rules, no training, the default) and `classifier` (any
Hugging Face token-classification checkpoint). `load_predictor(spec)` picks one by name/path.

Importing this package is cheap: torch and transformers load only when a classifier is built.
"""

from __future__ import annotations

import os

from tessy.predictors.base import BoundaryPredictor, SpanQuery, cut_index
from tessy.predictors.lexicon import LexiconPredictor, find_style_spans, style_char_mask

DEFAULT_PREDICTOR = "lexicon"

__all__ = [
    "BoundaryPredictor",
    "DEFAULT_PREDICTOR",
    "LexiconPredictor",
    "SpanQuery",
    "cut_index",
    "find_style_spans",
    "load_predictor",
    "style_char_mask",
]


def load_predictor(spec: str, **options) -> BoundaryPredictor:
    """Build a predictor from a spec: "lexicon", or the folder of a token-classification
    checkpoint (→ `ClassifierPredictor`, with `options` such as `device`, `max_batch`,
    `max_context_tokens`, `style_label_id`, `label_offset`)."""
    if spec == "lexicon":
        return LexiconPredictor(**options)
    path = os.path.expanduser(str(spec))
    if os.path.isdir(path):
        from tessy.predictors.classifier import ClassifierPredictor

        return ClassifierPredictor(path, **options)
    raise ValueError(
        f"unknown predictor {spec!r}: give 'lexicon' (rules, no model) or the path of a folder "
        "holding a Hugging Face token-classification checkpoint"
        + (" (this path exists but is not a folder)" if os.path.exists(path) else "")
    )
