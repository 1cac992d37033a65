"""The analysis report folder: PNG plots (matplotlib, Agg), `report.html`, `analysis.json`.

`write_report(figures, folder)` draws one PNG per figure of `tessy.analysis.figures.compute`,
writes the HTML page that shows them with the summary table and captions, and the JSON with
every number (per-record values included). `summary_table(figures)` is the plain-text table the
CLI prints. Colours are fixed per method name, so reports of different runs read alike.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tessy import durable

COLOURS = {
    "student-only": "#1f77b4", "teacher-only": "#ff7f0e", "tessy": "#2ca02c", "teacher-think": "#d62728",
    "teacher-answer": "#9467bd", "teacher-mix": "#8c564b", "teacher-score": "#e377c2",
    "teacher-reference": "#7f7f7f",
}
EXTRA_COLOURS = ("#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39")


def colour(label: str, labels: list[str]) -> str:
    method = label.split(" (")[0]
    if method in COLOURS and sum(1 for other in labels if other.split(" (")[0] == method) == 1:
        return COLOURS[method]
    return EXTRA_COLOURS[labels.index(label) % len(EXTRA_COLOURS)] if label in labels else "#333333"


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def summary_rows(figures: dict[str, Any]) -> list[list[str]]:
    header = ["method", "n", "teacher share", "tokens mean (think/answer/resp)", "sim. to student-only", "student NLL"]
    rows = [header]
    similarity = (figures["similarity"].get("to_student_only") or {})
    nll = figures.get("student_nll") or {}
    for label in figures["methods"]:
        lengths = figures["lengths"][label]
        split = "/".join(f"{lengths[s]['mean']:.0f}" if lengths[s]["mean"] else "0" for s in ("thinking", "answer", "response"))
        sim = similarity.get(label)
        rows.append([
            label,
            str(figures["prompts"][label]),
            f"{figures['teacher_share'][label]['token_weighted']:.1%}",
            f"{lengths['total']['mean']:.1f} ({split})",
            "1 (itself)" if label == "student-only" and similarity else (
                f"{sim['mean']:.3f} ± {sim['std']:.3f}" if sim and sim["n"] else "-"),
            f"{nll[label]['mean']:.3f} ± {nll[label]['sem']:.3f}" if label in nll and nll[label]["n"] else "-",
        ])
    return rows


def summary_table(figures: dict[str, Any]) -> str:
    rows = summary_rows(figures)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- plots


def _plots(figures: dict[str, Any], folder: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = figures["methods"]
    colours = [colour(label, labels) for label in labels]
    files: dict[str, str] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        files[name.removesuffix(".png")] = name

    # Teacher-token share (Fig. 17).
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
    shares = [figures["teacher_share"][label]["token_weighted"] for label in labels]
    ax.barh(labels, shares, color="#ff7f0e", label="teacher tokens")
    ax.barh(labels, [1 - s for s in shares], left=shares, color="#1f77b4", label="student tokens")
    for y, share in enumerate(shares):
        ax.text(0.01, y, f"teacher {share:.1%}", va="center", fontsize=9, color="white", fontweight="bold")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of response tokens (student tokenizer)")
    ax.set_title("Who wrote the tokens")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=2, fontsize=8)
    save(fig, "teacher_share.png")

    # Lengths (Fig. 12): mean per section, and the distribution of totals.
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * len(labels) + 2.5))
    bottom = [0.0] * len(labels)
    for section, shade in (("thinking", "#9ecae1"), ("answer", "#fdae6b"), ("response", "#a1d99b")):
        means = [figures["lengths"][label][section]["mean"] or 0.0 for label in labels]
        if any(means):
            left.barh(labels, means, left=bottom, color=shade, label=section)
            bottom = [b + m for b, m in zip(bottom, means)]
    left.invert_yaxis()
    left.set_xlabel("mean tokens per response")
    left.set_title("Response length by section")
    left.legend(fontsize=8)
    data = [figures["lengths"][label]["total"]["values"] or [0.0] for label in labels]
    box = right.boxplot(data, orientation="horizontal", patch_artist=True, tick_labels=labels)
    for patch, shade in zip(box["boxes"], colours):
        patch.set_facecolor(shade)
        patch.set_alpha(0.6)
    right.invert_yaxis()
    right.set_xlabel("tokens per response")
    right.set_title("Distribution of response lengths")
    save(fig, "lengths.png")

    # Similarity (Fig. 14): to student-only, and the matrix.
    sim = figures["similarity"]
    matrix = sim["matrix"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(3.5, 0.5 * len(labels) + 2)))
    to_student = sim.get("to_student_only")
    if to_student:
        names = [label for label in labels if label in to_student and to_student[label]["n"]]
        means = [to_student[label]["mean"] for label in names]
        errors = [to_student[label]["std"] for label in names]
        left.barh(names, means, xerr=errors, color=[colour(n, labels) for n in names], capsize=3)
        for y, mean in enumerate(means):
            left.text(0.01, y, f"{mean:.3f}", va="center", fontsize=9, color="white", fontweight="bold")
        left.set_xlim(0, 1)
        left.invert_yaxis()
        left.set_xlabel("TF-IDF cosine similarity to the student-only response (mean ± sd)")
        left.set_title("Closeness to the student's own responses")
    else:
        left.text(0.5, 0.5, "no student-only run given", ha="center", va="center")
        left.axis("off")
    values = [[v if v is not None else float("nan") for v in row] for row in matrix["values"]]
    image = right.imshow(values, cmap="viridis", vmin=0, vmax=1)
    right.set_xticks(range(len(labels)), labels, rotation=40, ha="right", fontsize=8)
    right.set_yticks(range(len(labels)), labels, fontsize=8)
    for a, row in enumerate(values):
        for b, v in enumerate(row):
            if v == v:
                right.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=7,
                           color="white" if v < 0.6 else "black")
    right.set_title("Mean same-prompt similarity")
    fig.colorbar(image, ax=right, fraction=0.046)
    save(fig, "similarity.png")

    # PCA (Fig. 8).
    pca = figures["pca"]
    fig, ax = plt.subplots(figsize=(7, 6))
    for label in labels:
        points = [p for p in pca["points"] if p["method"] == label]
        ax.scatter([p["x"] for p in points], [p["y"] for p in points], s=14, alpha=0.55,
                   color=colour(label, labels), label=label)
        if label in pca["centroids"]:
            cx, cy = pca["centroids"][label]
            ax.scatter([cx], [cy], s=160, marker="X", color=colour(label, labels), edgecolors="black")
    ratio = pca["explained_variance"]
    ax.set_xlabel(f"PC1 ({ratio[0]:.1%} of variance)")
    ax.set_ylabel(f"PC2 ({ratio[1]:.1%} of variance)")
    ax.set_title("TF-IDF of responses, 2-D PCA (X = method centroid)")
    ax.legend(fontsize=8)
    save(fig, "pca.png")

    # Word frequencies (Fig. 16).
    heat = figures["heatmap"]
    if heat["words"]:
        fig, ax = plt.subplots(figsize=(max(7, 0.38 * len(heat["words"]) + 2), 0.5 * len(labels) + 2))
        rates = [heat["rates"][label] for label in labels]
        image = ax.imshow(rates, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(heat["words"])), heat["words"], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_title("Frequent words (rate per 1,000 words; darker = more frequent)")
        fig.colorbar(image, ax=ax, fraction=0.03)
        save(fig, "top_words.png")

    # Student NLL.
    nll = figures.get("student_nll")
    if nll:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(labels) + 1.5))
        names = [label for label in labels if label in nll and nll[label]["n"]]
        means = [nll[label]["mean"] for label in names]
        ax.barh(names, means, xerr=[nll[label]["sem"] for label in names],
                color=[colour(n, labels) for n in names], capsize=3)
        for y, mean in enumerate(means):
            ax.text(mean * 0.02, y, f"{mean:.3f}", va="center", fontsize=9, color="white", fontweight="bold")
        ax.invert_yaxis()
        ax.set_xlabel("student's mean NLL per response token (nats; lower = more on-policy), ± s.e.m.")
        ax.set_title("How readily the student would have written it")
        save(fig, "student_nll.png")
    return files


# ----------------------------------------------------------------------------------- html

CAPTIONS = {
    "teacher_share": "Share of response tokens written by the teacher, counted in the student's tokenizer "
                     "(paper Fig. 17).",
    "lengths": "Tokens per response in the student's tokenizer, by section (paper Fig. 12). Families without a "
               "thinking section write a single 'response' section; teacher-think / teacher-answer count the "
               "first paragraph as thinking.",
    "similarity": "TF-IDF cosine similarity between responses to the same prompt (paper Fig. 14): left, each "
                  "method against student-only; right, every pair of methods.",
    "pca": "Every response as a TF-IDF vector, projected on two principal components (paper Fig. 8).",
    "top_words": "Most frequent words per method, stop words left out (paper Fig. 16).",
    "student_nll": "The student model's mean negative log-likelihood per token of each method's responses: the "
                   "most direct measure of how far the data is from what the student writes itself.",
}


def write_report(figures: dict[str, Any], folder: str | Path) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = _plots(figures, folder)
    durable.write_atomic(folder / "analysis.json", json.dumps(figures, indent=1, ensure_ascii=False) + "\n")
    rows = summary_rows(figures)
    table = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]) + "</table>"
    words = "<table><tr><th>method</th><th>most frequent words (per 1,000 words)</th></tr>" + "".join(
        f"<tr><td>{html.escape(label)}</td><td>"
        + ", ".join(f"{html.escape(w)} ({rate:.1f})" for w, rate in figures["top_words"][label]) + "</td></tr>"
        for label in figures["methods"]) + "</table>"
    sections = []
    for key, name in files.items():
        sections.append(f"<h2>{html.escape(key.replace('_', ' '))}</h2><p>{html.escape(CAPTIONS.get(key, ''))}</p>"
                        f"<img src=\"{html.escape(name)}\" alt=\"{html.escape(key)}\">")
        if key == "top_words":
            sections.append(words)
    sources = "".join(f"<li>{html.escape(label)}: {html.escape(src)}</li>" for label, src in figures["sources"].items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>tessy analysis</title>
<style>body{{font-family:system-ui,sans-serif;max-width:72em;margin:1.5em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;
text-align:left;font-size:.92em}}img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>tessy analysis</h1><p>Runs:</p><ul>{sources}</ul>
<p>Numbers below are over the prompts every method shares; all of them are in
<a href="analysis.json">analysis.json</a>.</p>{table}{''.join(sections)}</body></html>
"""
    path = folder / "report.html"
    durable.write_atomic(path, page)
    return path
