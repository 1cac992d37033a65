"""Analysis of records from several data methods on the same prompts (`tessy analyze`).

Owns the comparison the paper draws between TESSY and the other methods (§4.6, Figs. 8, 12,
14, 16, 17), computed from records only, plus the student's own NLL of each method's responses:

- `load`: runs -> a few numbers per record grouped by method, aligned on shared prompt ids, and
  the records streamed back from their files when their text is needed;
- `text`: words, sparse TF-IDF, cosine similarity, PCA, word frequencies (numpy, scipy);
- `nll`: the student model scoring responses in process, batched (transformers);
- `figures`: every number of the report, as one JSON-ready dict;
- `report`: PNG plots, `report.html`, `analysis.json`, and the printed summary table.

Scale: no record is held in memory, only a few numbers per record; the text figures cost about
8 bytes per (response, distinct word) pair (the sparse TF-IDF matrix) plus the vocabulary, never
responses x vocabulary (`bench/bench_analyze.py` measures it at 1k, 10k and 100k responses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessy.analysis.load import align, load_runs


def analyze(runs: list[str | Path], output: str | Path, student: str | None = None, student_format: str | None = None,
            nll: bool = True, device: str = "auto", batch_size: int = 8, max_batch_tokens: int = 8192,
            max_response_tokens: int = 1024, all_records: bool = False, top: int = 15,
            max_features: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Compute every figure for `runs`, write the report into `output`, return the figures.

    The student model for the NLL defaults to the one named in the records (`models.student`);
    `device` "auto" runs it on cuda when torch sees a GPU. `max_features` caps the TF-IDF
    vocabulary (default `tessy.analysis.text.MAX_FEATURES`); `progress` draws bars on stderr."""
    from tessy.analysis.figures import compute
    from tessy.analysis.report import write_report
    from tessy.analysis.text import MAX_FEATURES

    groups = load_runs(runs)
    if not all_records:
        align(groups)
    scorer, model = None, None
    if nll:
        from tessy.analysis.nll import StudentScorer

        named = groups[0].models.get("student", {})
        model = student or named.get("model") or "smollm2-135m-instruct"
        scorer = StudentScorer(model, chat_format=student_format or named.get("format") or "auto", device=device,
                               batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                               max_response_tokens=max_response_tokens)
    figures = compute(groups, scorer, top=top, max_features=max_features or MAX_FEATURES, progress=progress)
    figures["student_model"] = model
    if scorer is not None:
        figures["student_device"] = scorer.device
    figures["report"] = str(write_report(figures, output))
    return figures
