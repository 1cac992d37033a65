"""The boundary-predictor pipeline (paper §2.2, Table 2): sample → annotate → train → evaluate.

Each step is a library module with a `tessy predictor STEP` command over it:

- `sample`   (`sample.py`): generate full responses with one model, keep only their thinking
  text, cut random segments of it (measured in that model's tokens) → `segments.jsonl`;
- `annotate` (`annotate.py`): an annotator (an LLM over HTTP, the offline `lexicon` rules, or a
  scripted one in tests) lists the style phrases of each segment; they are located as character
  spans (`spans.py`) → an annotation folder (`records.jsonl`, `failures.jsonl`, `run.json`);
- `train`    (`train.py`): fine-tune a 2-class token-classification model on the character
  spans → a standard Hugging Face checkpoint that `tessy synthesize --student.predictor FOLDER`
  loads with no extra flags;
- `eval`     (`evaluate.py`): token precision / recall / F1 of the style class and boundary
  accuracy per role, for any set of predictors (lexicon, checkpoints, chance).

File formats (one JSON object per line):

- segment: ``{"segment_id", "source_id", "model", "role", "tokenizer", "text", "tokens",
  "start_char"}``;
- annotation: the segment's fields plus ``{"id", "spans": [[start, end], ...], "span_texts",
  "requested", "not_found", "not_found_texts", "annotator", "annotator_model", "prompt_version",
  "attempts", "answer"}``; spans are character ranges of ``text``, sorted, non-overlapping.

`config.py` holds the four command configs (light to import); `data.py` the shared helpers
(reading, the train/dev/test split, character spans → token labels).
"""
