"""The numbers behind every figure of an analysis report, computed from records only.

`compute(groups, scorer)` returns one JSON-ready dict (the report's `analysis.json`):

- `teacher_share`   per method: teacher tokens / all tokens (student tokenizer), token-weighted
                    and as a mean over records (the paper's Fig. 17);
- `lengths`         per method and section (thinking, answer, response, total): mean, median,
                    10th/90th percentile and every value, in student tokens (Fig. 12);
- `similarity`      TF-IDF cosine similarity of each method's response to the student-only
                    response of the same prompt (`to_student_only`, Fig. 14) and the mean
                    same-prompt similarity of every pair of methods (`matrix`); the TF-IDF's
                    columns (`vocabulary_size`), distinct words before the cap (`words_seen`),
                    the cap (`max_features`) and the matrix's `nonzeros`;
- `pca`             every response's TF-IDF vector projected on 2 principal components, with
                    method centroids (Fig. 8);
- `top_words`       most frequent words per method, rate per 1,000 words, stop words left out,
                    and the rates of their union in every method (`heatmap`, Fig. 16);
- `student_nll`     the student's mean NLL per response token per method (when scored).

Memory: per record a `Row` of a few numbers, plus the sparse TF-IDF matrix (8 bytes per distinct
word of each response) and its vocabulary; texts are read from the files as they are counted (one
pass for the text figures, one more for the NLL) and never held all at once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tessy.analysis.load import MethodRecords, iter_records, kept_count, progress_bar, response_text
from tessy.analysis.text import MAX_FEATURES, TermCounts, cosine_rows, pca_2d, rates_from_sums, top_from_sums

STUDENT_ONLY = "student-only"
SECTIONS = ("thinking", "answer", "response", "total")
PAIR_BLOCK = 4096  # same-prompt rows compared at a time


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
    rows = list(group.rows.values())
    teacher = sum(r.teacher_tokens for r in rows)
    total = sum(r.tokens for r in rows)
    return {
        "token_weighted": teacher / total if total else 0.0,
        "mean_per_record": float(np.mean([r.teacher_share for r in rows])) if rows else 0.0,
        "teacher_tokens": teacher,
        "tokens": total,
    }


def lengths(group: MethodRecords) -> dict[str, Any]:
    per_record = [row.sections for row in group.rows.values()]
    out = {section: _stats([float(p.get(section, 0)) for p in per_record]) for section in SECTIONS[:-1]}
    out["total"] = _stats([float(sum(p.values())) for p in per_record])
    return out


def count_texts(groups: list[MethodRecords], progress: bool = False) -> tuple[TermCounts, list[tuple[int, str]]]:
    """Every kept response read once into word counts; (counts, (group index, id) of each row)."""
    counts, owners = TermCounts(), []
    with progress_bar(kept_count(groups), "reading responses", progress) as bar:
        for g, record_id, record in iter_records(groups):
            counts.add(response_text(record))
            owners.append((g, record_id))
            bar.update(1)
    return counts, owners


def words_figure(groups: list[MethodRecords], counts: TermCounts, owners: list[tuple[int, str]],
                 count: int) -> dict[str, Any]:
    owner_group = np.fromiter((g for g, _ in owners), dtype=np.int32, count=len(owners))
    vocabulary = counts.vocabulary
    sums = {group.label: counts.column_sums(owner_group == g) for g, group in enumerate(groups)}
    top = {label: [[w, rate] for w, rate in top_from_sums(s, vocabulary, count)] for label, s in sums.items()}
    union: list[str] = []
    for entries in top.values():
        for word, _ in entries[: max(5, count // 2)]:
            if word not in union:
                union.append(word)
    heatmap = {"words": union, "rates": {label: rates_from_sums(s, counts.index, union) for label, s in sums.items()}}
    return {"top_words": top, "heatmap": heatmap}


def similarity(groups: list[MethodRecords], matrix: Any, owners: list[tuple[int, str]]) -> dict[str, Any]:
    """Same-prompt TF-IDF similarities and the PCA, from one matrix (one vocabulary and idf over
    every response analysed) whose rows belong to `owners`."""
    labels = [g.label for g in groups]
    row = {owner: index for index, owner in enumerate(owners)}
    cache: dict[tuple[int, int], list[float]] = {}

    def pair(a: int, b: int) -> list[float]:
        key = (min(a, b), max(a, b))
        if key not in cache:
            shared = sorted(set(groups[a].rows) & set(groups[b].rows))
            sims: list[float] = []
            for start in range(0, len(shared), PAIR_BLOCK):  # a block of rows at a time: no copy of the matrix
                ids = shared[start:start + PAIR_BLOCK]
                left, right = matrix[[row[(a, i)] for i in ids]], matrix[[row[(b, i)] for i in ids]]
                sims.extend(float(v) for v in cosine_rows(left, right))
            cache[key] = sims
        return cache[key]

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
    pca_points, centroids = [], {}
    for g, group in enumerate(groups):
        mine = [row[(g, record_id)] for record_id in group.rows]
        pca_points.extend({"id": record_id, "method": labels[g], "x": float(points[i, 0]), "y": float(points[i, 1])}
                          for record_id, i in zip(group.rows, mine))
        if mine:
            centroids[labels[g]] = [float(points[mine, 0].mean()), float(points[mine, 1].mean())]
    return {
        "similarity": {"to_student_only": to_student, "matrix": {"labels": labels, "values": values}},
        "pca": {"explained_variance": ratios, "points": pca_points, "centroids": centroids},
    }


def text_figures(groups: list[MethodRecords], top: int = 15, max_features: int | None = MAX_FEATURES,
                 progress: bool = False) -> dict[str, Any]:
    """Word frequencies, similarity and PCA from one streaming pass over the responses."""
    counts, owners = count_texts(groups, progress)
    out = words_figure(groups, counts, owners, top)
    seen, nnz = len(counts.index), counts.nnz
    matrix, vocabulary = counts.tfidf(max_features)
    del counts
    out.update(similarity(groups, matrix, owners))
    out["similarity"].update({"vocabulary_size": len(vocabulary), "words_seen": seen, "max_features": max_features,
                              "nonzeros": nnz})
    return out


def nll_figure(groups: list[MethodRecords], scorer: Any, progress: bool = False) -> dict[str, Any]:
    owners: list[tuple[int, str]] = []

    def records():
        for g, record_id, record in iter_records(groups):
            owners.append((g, record_id))
            yield record

    with progress_bar(kept_count(groups), "student NLL", progress) as bar:
        scored = scorer.score(records(), progress=bar)
    by_group: list[dict[str, Any]] = [{} for _ in groups]
    for (g, record_id), result in zip(owners, scored):
        by_group[g][record_id] = result
    out = {}
    for g, group in enumerate(groups):
        mine = [by_group[g][record_id] for record_id in group.rows]
        means = [s.mean for s in mine if s.tokens]
        tokens = sum(s.tokens for s in mine)
        stats = _stats(means)
        stats.update({
            "token_weighted": sum(s.nll_sum for s in mine) / tokens if tokens else None,
            "tokens": tokens,
            "truncated": sum(s.truncated for s in mine),
            "sem": (stats["std"] / math.sqrt(stats["n"])) if stats["n"] > 1 else 0.0,
            "ids": list(group.rows),
        })
        out[group.label] = stats
    return out


def compute(groups: list[MethodRecords], scorer: Any = None, top: int = 15, max_features: int | None = MAX_FEATURES,
            progress: bool = False) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "methods": [g.label for g in groups],
        "sources": {g.label: g.source for g in groups},
        "prompts": {g.label: len(g.rows) for g in groups},
        "teacher_share": {g.label: teacher_share(g) for g in groups},
        "lengths": {g.label: lengths(g) for g in groups},
    }
    texts = text_figures(groups, top, max_features, progress)
    figures.update({key: texts[key] for key in ("similarity", "pca")})
    figures.update({key: texts[key] for key in ("top_words", "heatmap")})
    figures["student_nll"] = nll_figure(groups, scorer, progress) if scorer is not None else None
    return figures
