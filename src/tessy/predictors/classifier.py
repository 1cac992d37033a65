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

Reading on (`cache_samples`, causal models whose cache checks out at load): for a query with a
`key` the classifier keeps the ids it read for that sample, their key/value cache and their
verdicts, and reads only the ids after the longest common prefix with the last query of the same
key (the rest of a span arriving in a stream, the next span after a cut); the verdicts are those
of reading the whole window (up to float rounding). At most `cache_samples` samples are kept
(least recently used go first); `forget(key)` drops one when its sample ends.

Batching: concurrent `label()` calls are queued; one worker task takes up to `max_batch` waiting
queries, runs one right-padded forward for those without a kept reading, one short forward each
for the others, in a single worker thread, and resolves them; queries that arrive meanwhile form
the next batch. `predict_seconds`, `batches`, `queries` and `tokens_read` (positions run through
the model) count the work.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import itertools
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tessy.predictors.base import BoundaryPredictor, SpanQuery, count_final, fill_whitespace_verdicts, piece_bounds

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


@dataclass
class _Reading:
    """What the classifier read of one sample: the window's ids, their key/value cache and the
    style flag at every position."""

    ids: list[int]
    cache: Any
    style: list[bool]


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
        cache_samples: int = 64,
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
        if max_batch < 1 or max_context_tokens < 0 or cache_samples < 0:
            raise ValueError("max_batch must be >= 1, max_context_tokens and cache_samples >= 0")
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
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = next((name for name in ("cache", "past_key_values") if name in params), None)
        self.cache_samples = cache_samples if self.causal and self._reads_on() else 0
        self._readings: OrderedDict[str, _Reading] = OrderedDict()
        self._readings_lock = threading.Lock()  # the worker thread reads them, forget() drops them
        tok = self.tokenizer
        self._prefix_id = next((i for i in (tok.bos_token_id, tok.eos_token_id) if i is not None), None)
        self._pad_id = next((i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None))

        self.predict_seconds = 0.0  # time in tokenization + forward, worker thread
        self.batches = 0
        self.queries = 0
        self.tokens_read = 0  # positions run through the model
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessy-classifier")
        self._pending: list[tuple[SpanQuery, asyncio.Future]] = []
        self._worker: asyncio.Task | None = None

    def final_count(self, pieces) -> int:
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
        return bool(torch.allclose(whole, prefix, rtol=1e-2, atol=1e-3 * (1 + float(prefix.abs().max()))))

    def _reads_on(self) -> bool:
        """Whether reading on from a key/value cache gives the logits of reading the whole text."""
        import torch
        from transformers import DynamicCache

        if self._cache_arg is None:
            return False
        ids = torch.arange(5, 17, dtype=torch.long)[None].to(self.device) % self.model.config.vocab_size
        try:
            with torch.inference_mode():
                whole = self.model(input_ids=ids).logits[0].float()
                cache = DynamicCache()
                first = self.model(input_ids=ids[:, :8], use_cache=True, **{self._cache_arg: cache}).logits[0]
                cache.crop(-2)  # as when a query shares only part of what was read
                rest = self.model(input_ids=ids[:, 6:], use_cache=True, **{self._cache_arg: cache}).logits[0]
        except Exception as exc:  # noqa: BLE001 - an architecture without a usable cache: read whole
            logger.info("predictor %s reads every window whole (no key/value cache: %s)", self.path, exc)
            return False
        pieced = torch.cat([first[:6], rest]).float()
        return bool(torch.allclose(whole, pieced, rtol=1e-2, atol=1e-3 * (1 + float(whole.abs().max()))))

    def forget(self, key: str) -> None:
        with self._readings_lock:
            self._readings.pop(key, None)

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
        """Label several spans in one padded forward (blocking; used by the worker thread)."""
        import torch

        start = time.perf_counter()
        encoded = [self._encode(q) for q in queries]
        read_on = [bool(q.key and self.cache_samples) for q in queries]
        is_style: list[list[bool]] = [[] for _ in queries]
        whole = [row for row, keyed in enumerate(read_on) if not keyed]
        if whole:
            for row, flags in zip(whole, self._read_whole([encoded[row][0] for row in whole])):
                is_style[row] = flags
        for row, query in enumerate(queries):
            if read_on[row]:
                is_style[row] = self._read_on(query.key, encoded[row][0])
        results = []
        for row, (_, targets) in enumerate(encoded):
            verdicts = [None if t is None else bool(is_style[row][max(t - self.label_offset, 0)]) for t in targets]
            results.append(fill_whitespace_verdicts(verdicts))
        self.predict_seconds += time.perf_counter() - start
        self.batches += 1
        self.queries += len(queries)
        return results

    def _read_whole(self, windows: list[list[int]]) -> list[list[bool]]:
        """The style flag at every position of each window, in one right-padded forward."""
        import torch

        width = max(len(ids) for ids in windows)
        input_ids = torch.full((len(windows), width), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(windows), width), dtype=torch.long)
        for row, ids in enumerate(windows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)).logits
        self.tokens_read += sum(len(ids) for ids in windows)
        flags = (logits.argmax(-1) == self.style_label_id).cpu().tolist()
        return [row[: len(ids)] for row, ids in zip(flags, windows)]

    def _read_on(self, key: str, ids: list[int]) -> list[bool]:
        """The style flag at every position of `ids`, reading only what follows the prefix this
        key's last window shares with it (see the module doc)."""
        import torch
        from transformers import DynamicCache

        with self._readings_lock:
            reading = self._readings.pop(key, None)
        shared = 0
        if reading is not None:
            limit = min(len(reading.ids), len(ids))
            while shared < limit and reading.ids[shared] == ids[shared]:
                shared += 1
        with torch.inference_mode():
            if shared == 0:
                reading = _Reading([], DynamicCache(), [])
            elif len(reading.ids) > shared:
                reading.cache.crop(shared - len(reading.ids))
            style = reading.style[:shared]
            if shared < len(ids):
                new = torch.tensor([ids[shared:]], dtype=torch.long, device=self.device)
                logits = self.model(input_ids=new, use_cache=True, **{self._cache_arg: reading.cache}).logits
                style += (logits[0].argmax(-1) == self.style_label_id).cpu().tolist()
                self.tokens_read += len(ids) - shared
        reading.ids, reading.style = list(ids), style
        with self._readings_lock:
            self._readings[key] = reading
            while len(self._readings) > self.cache_samples:
                self._readings.popitem(last=False)
        return style

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
