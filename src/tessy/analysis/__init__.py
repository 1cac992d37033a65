"""Analysis of records from several data methods on the same prompts (`tessy analyze`).

Owns the comparison the paper draws between TESSY and the other methods (§4.6, Figs. 8, 12,
14, 16, 17), computed from records only, plus the student's own NLL of each method's responses:

- `load`: runs -> records grouped by method, aligned on shared prompt ids;
- `text`: words, TF-IDF, cosine similarity, PCA, word frequencies (numpy);
- `nll`: the student model scoring responses in process (transformers);
- `figures`: every number of the report, as one JSON-ready dict;
- `report`: PNG plots, `report.html`, `analysis.json`, and the printed summary table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessy.analysis.load import align, load_runs


def analyze(runs: list[str | Path], output: str | Path, student: str | None = None, student_format: str | None = None,
            nll: bool = True, device: str = "cpu", batch_size: int = 8, max_response_tokens: int = 1024,
            all_records: bool = False, top: int = 15) -> dict[str, Any]:
    """Compute every figure for `runs`, write the report into `output`, return the figures.

    The student model for the NLL defaults to the one named in the records (`models.student`)."""
    from tessy.analysis.figures import compute
    from tessy.analysis.report import write_report

    groups = load_runs(runs)
    if not all_records:
        align(groups)
    scorer, model = None, None
    if nll:
        from tessy.analysis.nll import StudentScorer

        first = next(iter(groups[0].records.values()))
        named = first.get("models", {}).get("student", {})
        model = student or named.get("model") or "smollm2-135m-instruct"
        scorer = StudentScorer(model, chat_format=student_format or named.get("format") or "auto", device=device,
                               batch_size=batch_size, max_response_tokens=max_response_tokens)
    figures = compute(groups, scorer, top=top)
    figures["student_model"] = model
    figures["report"] = str(write_report(figures, output))
    return figures
