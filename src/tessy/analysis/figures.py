"""The numbers behind every figure of an analysis report, computed from records only.

`compute(groups, scorer)` returns one JSON-ready dict (the report's `analysis.json`):

- `teacher_share`   per method: teacher tokens / all tokens (student tokenizer), token-weighted
                    and as a mean over records (the paper's Fig. 17);
- `lengths`         per method and section (thinking, answer, response, total): mean, median,
                    10th/90th percentile and every value, in student tokens (Fig. 12);
- `similarity`      TF-IDF cosine similarity of each method's response to the student-only
                    response of the same prompt (`to_student_only`, Fig. 14) and the mean
                    same-prompt similarity of every pair of methods (`matrix`);
- `pca`             every response's TF-IDF vector projected on 2 principal components, with
                    method centroids (Fig. 8);
- `top_words`       most frequent words per method, rate per 1,000 words, stop words left out,
                    and the rates of their union in every method (`heatmap`, Fig. 16);
- `student_nll`     the student's mean NLL per response token per method (when scored).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tessy.analysis.load import MethodRecords, response_text, section_tokens
from tessy.analysis.text import cosine_rows, pca_2d, tfidf, top_words, word_rates

STUDENT_ONLY = "student-only"
SECTIONS = ("thinking", "answer", "response", "total")


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "median": None, "p10": None, "p90": None, "std": None, "values": []}
    array = np.asarray(values, dtype=float)
    return {
        "n": len(values),
        "mean": float(array.mean()),
        "median": float(np.median(array)),
        "p10": float(np.percentile(array, 10)),
        "p90": float(np.percentile(array, 90)),
        "std": float(array.std(ddof=1)) if len(values) > 1 else 0.0,
        "values": [float(v) for v in values],
    }


def teacher_share(group: MethodRecords) -> dict[str, Any]:
    records = list(group.records.values())
    teacher = sum(r["totals"]["teacher_tokens_student"] for r in records)
    total = sum(r["totals"]["tokens_student"] for r in records)
    return {
        "token_weighted": teacher / total if total else 0.0,
        "mean_per_record": float(np.mean([r["totals"]["teacher_share"] for r in records])) if records else 0.0,
        "teacher_tokens": teacher,
        "tokens": total,
    }


def lengths(group: MethodRecords) -> dict[str, Any]:
    per_record = [section_tokens(r) for r in group.records.values()]
    out = {section: _stats([float(p[section]) for p in per_record]) for section in SECTIONS[:-1]}
    out["total"] = _stats([float(sum(p.values())) for p in per_record])
    return out


def similarity(groups: list[MethodRecords]) -> dict[str, Any]:
    """Same-prompt TF-IDF similarities; one vocabulary and idf over every response analysed."""
    labels = [g.label for g in groups]
    texts, owners = [], []
    for g_index, group in enumerate(groups):
        for record_id, record in group.records.items():
            texts.append(response_text(record))
            owners.append((g_index, record_id))
    matrix, vocab = tfidf(texts)
    row = {owner: index for index, owner in enumerate(owners)}

    def pair(a: int, b: int) -> list[float]:
        shared = sorted(set(groups[a].records) & set(groups[b].records))
        if not shared:
            return []
        left = matrix[[row[(a, i)] for i in shared]]
        right = matrix[[row[(b, i)] for i in shared]]
        return [float(v) for v in cosine_rows(left, right)]

    values = [[None] * len(groups) for _ in groups]
    for a in range(len(groups)):
        for b in range(len(groups)):
            sims = pair(a, b)
            values[a][b] = float(np.mean(sims)) if sims else None
    to_student = None
    student = [i for i, g in enumerate(groups) if g.method == STUDENT_ONLY]
    if student:
        to_student = {groups[a].label: _stats(pair(a, student[0])) for a in range(len(groups)) if a != student[0]}
    points, ratios = pca_2d(matrix)
    pca_points = [{"id": record_id, "method": labels[g], "x": float(points[i, 0]), "y": float(points[i, 1])}
                  for i, (g, record_id) in enumerate(owners)]
    centroids = {}
    for g_index, label in enumerate(labels):
        mine = [i for i, (g, _) in enumerate(owners) if g == g_index]
        if mine:
            centroids[label] = [float(points[mine, 0].mean()), float(points[mine, 1].mean())]
    return {
        "similarity": {"to_student_only": to_student, "matrix": {"labels": labels, "values": values},
                       "vocabulary_size": len(vocab)},
        "pca": {"explained_variance": ratios, "points": pca_points, "centroids": centroids},
    }


def words_figure(groups: list[MethodRecords], count: int) -> dict[str, Any]:
    texts = {g.label: [response_text(r) for r in g.records.values()] for g in groups}
    top = {label: [[w, rate] for w, rate in top_words(t, count)] for label, t in texts.items()}
    union: list[str] = []
    for entries in top.values():
        for word, _ in entries[: max(5, count // 2)]:
            if word not in union:
                union.append(word)
    heatmap = {"words": union, "rates": {label: word_rates(t, union) for label, t in texts.items()}}
    return {"top_words": top, "heatmap": heatmap}


def nll_figure(groups: list[MethodRecords], scorer: Any) -> dict[str, Any]:
    out = {}
    for group in groups:
        scored = scorer.score(list(group.records.values()))
        means = [s.mean for s in scored if s.tokens]
        tokens = sum(s.tokens for s in scored)
        stats = _stats(means)
        stats.update({
            "token_weighted": sum(s.nll_sum for s in scored) / tokens if tokens else None,
            "tokens": tokens,
            "truncated": sum(s.truncated for s in scored),
            "sem": (stats["std"] / math.sqrt(stats["n"])) if stats["n"] > 1 else 0.0,
            "ids": list(group.records),
        })
        out[group.label] = stats
    return out


def compute(groups: list[MethodRecords], scorer: Any = None, top: int = 15) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "methods": [g.label for g in groups],
        "sources": {g.label: g.source for g in groups},
        "prompts": {g.label: len(g.records) for g in groups},
        "teacher_share": {g.label: teacher_share(g) for g in groups},
        "lengths": {g.label: lengths(g) for g in groups},
    }
    figures.update(similarity(groups))
    figures.update(words_figure(groups, top))
    figures["student_nll"] = nll_figure(groups, scorer) if scorer is not None else None
    return figures
