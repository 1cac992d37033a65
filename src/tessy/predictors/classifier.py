"""The model-based boundary predictor (`classifier`): any Hugging Face token-classification
checkpoint folder (AutoModelForTokenClassification + its fast tokenizer), e.g. the paper's
Qwen3-0.6B-Base with a 2-class head.

Label semantics come from the checkpoint's config (constructor arguments override them):

- `tessy_style_label_id`: the class id that means style; else the id whose `id2label` name says
  style ("style", "STYLE", "is_style"; not "non-style"); else 1 (the paper's convention);
- `tessy_label_offset`: 0 when the logits at token i describe token i, 1 when they describe
  token i+1 (the paper's published predictors); else 1.
A fallback to the paper's convention is logged as a warning. The checkpoint is refused when the
folder is missing, `num_labels != 2`, the tokenizer is not a fast one (offsets are needed), or any
weight (above all the head) is missing or mismatched: a randomly initialised head never runs.

Mapping verdicts onto the generating model's pieces: the classifier tokenizes the tail of the
context plus the joined pieces in one go (`return_offsets_mapping`); a piece takes the verdict of
the classifier token holding its first non-whitespace character (the first classifier token
overlapping that piece's non-whitespace text); whitespace pieces follow
`base.fill_whitespace_verdicts`. At most `max_context_tokens` classifier tokens of context are
fed. Every piece gets a verdict, the first one included; with offset 1 and nothing before the
first token, the tokenizer's BOS (else EOS) token is put in front to carry its prediction.

When a verdict is final (`final_count`): for a causal model (checked at load: the logits of a
prefix do not change when tokens are appended), a piece's verdict depends on the text up to the
classifier token holding its first non-whitespace character (offset 0) or the one before it
(offset 1); that token is complete once whitespace and then more text follow the character (no
tokenizer here joins a word to the next across whitespace). A bidirectional model's verdicts
depend on all the text, so none is final before the request ends.

Context window: at most `max_context_tokens` classifier tokens of context, at least half as many
when the text has them. The window starts at fixed points (multiples of half the window in tokens,
of 4 x the window in characters), so while a sample's text grows its next query begins with the
same ids.

Reading on (`cache_mb`): for a query with a `key`, a causal model reads only the ids after the
prefix the sample's window shares with its last one (`tessy.predictors.reading`; same verdicts as
reading whole, up to float rounding); the kept key/value caches take at most `cache_mb` MiB
(least recently asked samples dropped first; 0: read every window whole), and `forget(key)` drops
one when its sample ends.

Batching: concurrent `label()` calls are queued; one worker task takes up to `max_batch` waiting
queries, reads them together (at most two forwards) in a single worker thread, and resolves them;
queries that arrive meanwhile form the next batch. `predict_seconds`, `batches`, `queries` and
`tokens_read` (positions run through the model) count the work.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from tessy.predictors.base import BoundaryPredictor, SpanQuery, count_final, fill_whitespace_verdicts, piece_bounds
from tessy.predictors.reading import WindowReader, logits_agree

logger = logging.getLogger(__name__)

#: Text after a character that completes the classifier token holding it: whitespace, then more.
_WORD_THEN_TEXT = re.compile(r"\s\S")

PAPER_STYLE_LABEL_ID = 1
PAPER_LABEL_OFFSET = 1


class PredictorLoadError(ValueError):
    """A classifier checkpoint cannot be used as a boundary predictor."""


def label_semantics(config, style_label_id: int | None = None, label_offset: int | None = None) -> tuple[int, int]:
    """(style class id, label offset) for a token-classification config; see the module doc."""
    fallbacks = []
    if style_label_id is None:
        style_label_id = getattr(config, "tessy_style_label_id", None)
    if style_label_id is None:
        style_label_id = _style_id_from_names(getattr(config, "id2label", None) or {})
    if style_label_id is None:
        style_label_id = PAPER_STYLE_LABEL_ID
        fallbacks.append(f"style label id {PAPER_STYLE_LABEL_ID}")
    if label_offset is None:
        label_offset = getattr(config, "tessy_label_offset", None)
    if label_offset is None:
        label_offset = PAPER_LABEL_OFFSET
        fallbacks.append(f"label offset {PAPER_LABEL_OFFSET} (logits at token i label token i+1)")
    style_label_id, label_offset = int(style_label_id), int(label_offset)
    if style_label_id not in (0, 1):
        raise PredictorLoadError(f"style label id must be 0 or 1, not {style_label_id}")
    if label_offset not in (0, 1):
        raise PredictorLoadError(f"label offset must be 0 or 1, not {label_offset}")
    if fallbacks:
        logger.warning(
            "predictor config does not say its label semantics (set tessy_style_label_id / "
            "tessy_label_offset in config.json, or a label named 'style'); assuming the paper's "
            "convention: %s",
            ", ".join(fallbacks),
        )
    return style_label_id, label_offset


def _style_id_from_names(id2label: dict) -> int | None:
    found = []
    for key, name in id2label.items():
        norm = str(name).lower().replace("-", "_").replace(" ", "_")
        if "style" in norm and not any(neg in norm for neg in ("non_style", "not_style", "nonstyle", "no_style")):
            found.append(int(key))
    return found[0] if len(found) == 1 else None


class ClassifierPredictor(BoundaryPredictor):
    """Boundary predictor backed by a token-classification checkpoint; see the module doc."""

    name = "classifier"

    def __init__(
        self,
        path: str,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_batch: int = 32,
        max_context_tokens: int = 256,
        cache_mb: float = 1024.0,
        style_label_id: int | None = None,
        label_offset: int | None = None,
    ):
        import torch
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        path = os.path.expanduser(str(path))
        if not os.path.isdir(path):
            raise FileNotFoundError(f"predictor checkpoint folder not found: {path!r}")
        if not os.path.exists(os.path.join(path, "config.json")):
            raise PredictorLoadError(f"{path!r} has no config.json; it is not a Hugging Face checkpoint folder")
        if max_batch < 1 or max_context_tokens < 0 or cache_mb < 0:
            raise ValueError("max_batch must be >= 1, max_context_tokens and cache_mb >= 0")
        config = AutoConfig.from_pretrained(path)
        if config.num_labels != 2:
            raise PredictorLoadError(
                f"{path!r}: a boundary predictor needs a 2-class head (style / capability); "
                f"this checkpoint has num_labels={config.num_labels}"
            )
        self.style_label_id, self.label_offset = label_semantics(config, style_label_id, label_offset)

        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if not getattr(self.tokenizer, "is_fast", False):
            raise PredictorLoadError(f"{path!r}: the tokenizer must be a fast tokenizer (character offsets are needed)")

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if torch_dtype is None:
            torch_dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        model, info = AutoModelForTokenClassification.from_pretrained(path, dtype=torch_dtype, output_loading_info=True)
        missing = sorted(info.get("missing_keys") or [])
        mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
        if missing or mismatched:
            head = [k for k in missing if k.split(".")[0] in ("score", "classifier")]
            what = "its token-classification head is missing" if head else "weights are missing or mismatched"
            raise PredictorLoadError(
                f"{path!r} is not a trained token-classification checkpoint: {what} "
                f"(missing: {missing[:6]}, mismatched: {mismatched[:6]}); loading it would run a "
                "randomly initialised head. Train a predictor first or give the right folder."
            )
        self.model = model.to(self.device).eval()
        self.causal = self._is_causal()
        self.path = path
        self.max_batch = max_batch
        self.max_context_tokens = max_context_tokens
        tok = self.tokenizer
        self._prefix_id = next((i for i in (tok.bos_token_id, tok.eos_token_id) if i is not None), None)
        self._pad_id = next((i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None))

        self.reader = WindowReader(self.model, style_label_id=self.style_label_id, pad_id=self._pad_id,
                                   budget_bytes=int(cache_mb * 2**20), causal=self.causal)

        self.predict_seconds = 0.0  # time in tokenization + forward, worker thread
        self.batches = 0
        self.queries = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessy-classifier")
        self._pending: list[tuple[SpanQuery, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    def final_count(self, pieces, context: str = "") -> int:
        if not self.causal:
            return 0
        return count_final(pieces, lambda after: bool(_WORD_THEN_TEXT.search(after)), from_first_char=True)

    def _is_causal(self) -> bool:
        """Whether the logits at a position ignore the tokens after it (a decoder backbone)."""
        import torch

        ids = torch.arange(5, 13, dtype=torch.long)[None].to(self.device) % self.model.config.vocab_size
        with torch.inference_mode():
            whole = self.model(input_ids=ids).logits[0, :4].float()
            prefix = self.model(input_ids=ids[:, :4]).logits[0].float()
        return logits_agree(whole, prefix)

    @property
    def reads_on(self) -> bool:
        """Whether the classifier reads on from what it read of a sample (else every window whole)."""
        return self.reader.reads_on

    @property
    def tokens_read(self) -> int:
        return self.reader.tokens_read

    def forget(self, key: str) -> None:
        self.reader.forget(key)

    # -- async batching -------------------------------------------------------------------
    async def label(self, query: SpanQuery) -> list[bool]:
        if not query.pieces:
            return []
        future = asyncio.get_running_loop().create_future()
        self._pending.append((query, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let callers scheduled in the same tick enqueue first
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            try:
                results = await loop.run_in_executor(self._executor, self.label_batch, [q for q, _ in batch])
            except Exception as exc:  # hand the error to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), verdicts in zip(batch, results):
                if not future.done():
                    future.set_result(verdicts)

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            await self._worker
        self._executor.shutdown(wait=True)

    # -- synchronous core -----------------------------------------------------------------
    def label_batch(self, queries: list[SpanQuery]) -> list[list[bool]]:
        """Label several spans together (blocking; used by the worker thread)."""
        start = time.perf_counter()
        encoded = [self._encode(q) for q in queries]
        is_style = self.reader.read([ids for ids, _ in encoded], [q.key for q in queries])
        results = []
        for row, (_, targets) in enumerate(encoded):
            verdicts = [None if t is None else bool(is_style[row][max(t - self.label_offset, 0)]) for t in targets]
            results.append(fill_whitespace_verdicts(verdicts))
        self.predict_seconds += time.perf_counter() - start
        self.batches += 1
        self.queries += len(queries)
        return results

    def _encode(self, query: SpanQuery) -> tuple[list[int], list[int | None]]:
        """Classifier ids to feed, and per piece the position whose label it takes (None for
        whitespace pieces)."""
        window = self.max_context_tokens
        context = ""
        if window:  # the window's fixed starting points: see the module doc
            step = max(32, 4 * window)  # characters; at least 2 steps of them are tokenized
            context = query.context[max(0, (len(query.context) - 2 * step) // step * step):]
        text = context + "".join(query.pieces)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        ends = [end if end > begin else -1 for begin, end in enc["offset_mapping"]]
        ends = list(itertools.accumulate(ends, max))  # non-decreasing, for bisect
        first_span_token = bisect.bisect_right(ends, len(context))
        half = max(1, window // 2)
        keep_from = max(0, (first_span_token - half) // half * half) if window else first_span_token
        ids = ids[keep_from:]
        targets: list[int | None] = []
        for begin, end in piece_bounds(query.pieces, offset=len(context)):
            first_char = next((p for p in range(begin, end) if not text[p].isspace()), None)
            if first_char is None:
                targets.append(None)
            else:
                token = min(bisect.bisect_right(ends, first_char), len(ends) - 1)
                targets.append(token - keep_from)
        if self.label_offset == 1 and 0 in targets and self._prefix_id is not None:
            ids = [self._prefix_id] + ids  # a position before the first token, to carry its label
            targets = [None if t is None else t + 1 for t in targets]
        # (with neither BOS nor EOS, a first token's label is read from its own position)
        return ids or [self._pad_id], targets
