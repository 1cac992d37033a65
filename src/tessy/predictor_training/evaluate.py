"""`tessy predictor eval`: how well predictors find style text and cut spans, on annotated segments.

Owns: the evaluation protocol, the `chance` baseline, and the comparison table / JSON.

Every predictor is asked exactly as `tessy synthesize` asks it: a `SpanQuery` holding the text
before a span and the span's pieces, one piece per token of the model that wrote the segment
(`--tokenizer` overrides that tokenizer). Gold labels come from the annotated character spans, a
piece taking the label of its first non-whitespace character (whitespace pieces are not scored).

- Token scores: each segment is labelled in consecutive spans of `k` pieces (context: the
  segment text before the span); precision, recall and F1 of the style class over all scored
  pieces of the split.
- Boundary accuracy, per role: at `starts_per_segment` random piece positions per segment a span
  of `k` pieces starts; the cut is `predictors.base.cut_index(role, labels)` (teacher: before the
  first style piece; student: before the first capability piece; None: no cut). The predicted
  cut is *exact* when it equals the annotated cut (both None counts), *near* when both are
  None or both fall within `tolerance` pieces of each other.
- `chance`: labels each piece style with probability equal to the style rate of the scored
  pieces (seeded): what a predictor knowing only the class balance does.
- `annotations:PATH`: another annotation of the same segments (an LLM annotator's, say) read as
  a predictor, so an annotator is scored against hand labels under the same protocol.

Results: `evaluate()` returns a dict (also written as JSON with `output`); `format_table` renders
one row per predictor.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from tessy import durable
from tessy.predictors.base import BoundaryPredictor, SpanQuery, cut_index, fill_whitespace_verdicts, piece_bounds
from tessy.predictor_training.config import EvalConfig
from tessy.predictor_training.data import (char_mask, first_visible, parse_roles, pieces_of, range_labels,
                                            read_annotations, select_split, split_paths)


class ChancePredictor(BoundaryPredictor):
    """Style with probability `rate`, independently per piece (seeded)."""

    name = "chance"

    def __init__(self, rate: float, seed: int = 0):
        self.rate = rate
        self.rng = random.Random(seed)

    async def label(self, query: SpanQuery) -> list[bool]:
        return [self.rng.random() < self.rate for _ in query.pieces]


class AnnotationsPredictor(BoundaryPredictor):
    """Labels pieces from another annotation of the same segment texts: each piece takes the
    label of its first non-whitespace character there (capability where no annotation holds
    the text)."""

    name = "annotations"

    def __init__(self, path: str):
        self.masks = {a["text"]: char_mask(a["text"], a["spans"]) for a in read_annotations(path)}

    async def label(self, query: SpanQuery) -> list[bool]:
        seen = query.context + "".join(query.pieces)
        mask = next((m for text, m in self.masks.items() if text.startswith(seen)), None)
        labels, start = [], len(query.context)
        for piece in query.pieces:
            pos = first_visible(seen, start, start + len(piece))
            labels.append(bool(mask and pos is not None and mask[pos]))
            start += len(piece)
        return labels


def parse_predictors(spec: str) -> list[tuple[str, str]]:
    """"lexicon,chance,mine=runs/p" → [("lexicon", "lexicon"), ("chance", "chance"), ("mine", "runs/p")];
    an unnamed folder is named after its last path part."""
    named = []
    for part in split_paths(spec):
        name, _, target = part.partition("=") if "=" in part else ("", "", part)
        target = target.strip()
        named.append((name.strip() or (target if target in ("lexicon", "chance") else Path(target).name or target), target))
    if not named:
        raise ValueError("predictors: name at least one (lexicon, chance, or a checkpoint folder)")
    return named


def _prepare(annotations: list[dict], tokenizer_spec: str) -> list[dict]:
    """Per segment: its pieces, their character bounds and gold labels."""
    from tessy.models import load_tokenizer

    tokenizers: dict[str, object] = {}
    items = []
    for a in annotations:
        spec = tokenizer_spec or a.get("tokenizer") or a.get("model") or ""
        if spec not in tokenizers:
            try:
                tokenizers[spec] = load_tokenizer(spec)
            except Exception as exc:
                raise ValueError(f"cannot load the tokenizer of {spec!r} (segment {a.get('segment_id')}): {exc}; "
                                 "give one with --tokenizer") from None
        text = a["text"]
        pieces = pieces_of(tokenizers[spec], text)
        bounds = piece_bounds(pieces)
        gold = range_labels(text, char_mask(text, a["spans"]), bounds)
        items.append({"annotation": a, "pieces": pieces, "bounds": bounds, "gold": gold})
    return items


def _queries(item: dict, k: int, rng: random.Random, starts: int) -> tuple[list[tuple[int, int]], list[int]]:
    """Window ranges (consecutive spans of k pieces) and the random span starts of one segment."""
    n = len(item["pieces"])
    windows = [(i, min(i + k, n)) for i in range(0, n, k)]
    visible = [i for i, g in enumerate(item["gold"]) if g is not None]
    chosen = sorted(rng.sample(visible, min(starts, len(visible))))
    return windows, chosen


async def _label_all(predictor: BoundaryPredictor, queries: list[SpanQuery], chunk: int = 256) -> list[list[bool]]:
    results: list[list[bool]] = []
    for start in range(0, len(queries), chunk):  # concurrent calls let a classifier batch them
        results += await asyncio.gather(*(predictor.label(q) for q in queries[start:start + chunk]))
    return results


def _scores(tp: int, fp: int, fn: int) -> dict:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}


async def evaluate_predictor(predictor: BoundaryPredictor, items: list[dict], config: EvalConfig) -> dict:
    rng = random.Random(config.seed)
    token_q, token_ref, cut_q, cut_ref = [], [], [], []
    for item in items:
        windows, starts = _queries(item, config.k, rng, config.starts_per_segment)
        text, pieces, bounds = item["annotation"]["text"], item["pieces"], item["bounds"]
        for a, b in windows:
            token_q.append(SpanQuery(text[: bounds[a][0]], tuple(pieces[a:b])))
            token_ref.append(item["gold"][a:b])
        for p in starts:
            end = min(p + config.k, len(pieces))
            cut_q.append(SpanQuery(text[: bounds[p][0]], tuple(pieces[p:end])))
            cut_ref.append((item["annotation"]["role"], fill_whitespace_verdicts(item["gold"][p:end])))
    labels = await _label_all(predictor, token_q + cut_q)
    tp = fp = fn = 0
    for predicted, gold in zip(labels[: len(token_q)], token_ref):
        for p, g in zip(predicted, gold):
            if g is None:
                continue
            tp += p and g
            fp += p and not g
            fn += (not p) and g
    boundary: dict[str, dict] = {}
    for predicted, (role, gold) in zip(labels[len(token_q):], cut_ref):
        want, got = cut_index(role, gold), cut_index(role, predicted)
        row = boundary.setdefault(role, {"spans": 0, "exact": 0, "near": 0, "gold_cuts": 0})
        row["spans"] += 1
        row["gold_cuts"] += want is not None
        row["exact"] += want == got
        row["near"] += (want is None and got is None) or (
            want is not None and got is not None and abs(want - got) <= config.tolerance)
    for row in boundary.values():
        row["exact_rate"] = row["exact"] / row["spans"] if row["spans"] else 0.0
        row["near_rate"] = row["near"] / row["spans"] if row["spans"] else 0.0
    return {"token": _scores(tp, fp, fn), "boundary": boundary}


async def evaluate_async(config: EvalConfig, predictors: dict[str, BoundaryPredictor] | None = None) -> dict:
    """Scores of every predictor of `config.predictors` (or of `predictors`, name → predictor)."""
    from tessy.predictors import load_predictor

    roles = parse_roles(config.roles)
    if config.k < 1 or config.starts_per_segment < 0 or config.tolerance < 0:
        raise ValueError("k must be >= 1, starts_per_segment and tolerance >= 0")
    annotations = select_split(read_annotations(config.data, roles), config.split, test_fraction=config.test_fraction,
                               dev_fraction=config.dev_fraction, seed=config.split_seed)
    annotations.sort(key=lambda a: str(a.get("segment_id")))
    if config.limit:
        annotations = annotations[: config.limit]
    if not annotations:
        raise ValueError(f"no annotated segments in split {config.split!r} of {config.data}")
    items = _prepare(annotations, config.tokenizer)
    scored = [g for item in items for g in item["gold"] if g is not None]
    rate = sum(scored) / len(scored) if scored else 0.0
    results = {
        "data": config.data, "split": config.split, "segments": len(items),
        "segments_per_role": {r: sum(1 for i in items if i["annotation"]["role"] == r) for r in roles},
        "scored_pieces": len(scored), "style_rate": rate, "k": config.k, "tolerance": config.tolerance,
        "starts_per_segment": config.starts_per_segment, "seed": config.seed, "predictors": {},
    }
    named = list(predictors.items()) if predictors else parse_predictors(config.predictors)
    for name, spec in named:
        predictor = spec if isinstance(spec, BoundaryPredictor) else (
            ChancePredictor(rate, config.seed) if spec == "chance"
            else AnnotationsPredictor(spec.removeprefix("annotations:")) if spec.startswith("annotations:")
            else load_predictor(spec))
        try:
            scores = await evaluate_predictor(predictor, items, config)
        finally:
            await predictor.aclose()
        scores["spec"] = spec if isinstance(spec, str) else predictor.name
        results["predictors"][name] = scores
    if config.output:
        path = Path(config.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        durable.write_atomic(path, json.dumps(results, indent=2) + "\n")
    return results


def evaluate(config: EvalConfig, predictors: dict[str, BoundaryPredictor] | None = None) -> dict:
    return asyncio.run(evaluate_async(config, predictors))


def format_table(results: dict) -> str:
    """One row per predictor: style P / R / F1, then exact / near cut accuracy per role."""
    roles = [r for r, n in results["segments_per_role"].items() if n]
    header = ["predictor", "P", "R", "F1"]
    for role in roles:
        header += [f"{role} exact", f"{role} ±{results['tolerance']}"]
    rows = [header]
    for name, scores in results["predictors"].items():
        token = scores["token"]
        row = [name, f"{token['precision']:.3f}", f"{token['recall']:.3f}", f"{token['f1']:.3f}"]
        for role in roles:
            b = scores["boundary"].get(role)
            row += [f"{b['exact_rate']:.3f}", f"{b['near_rate']:.3f}"] if b else ["-", "-"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    spans = ", ".join(f"{role}: {results['predictors'][next(iter(results['predictors']))]['boundary'].get(role, {}).get('spans', 0)} spans"
                      for role in roles)
    summary = (f"{results['segments']} {results['split']} segments, {results['scored_pieces']} scored pieces "
               f"(style rate {results['style_rate']:.1%}), k={results['k']}; boundary: {spans}")
    return "\n".join(lines + [summary])
