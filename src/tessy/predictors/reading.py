"""`WindowReader`: runs windows of classifier ids through a token-classification model and returns
the style flag at every position, reading on from what it read of the same sample before.

A boundary predictor is asked again and again about the same sample: the first tokens of a span
as they stream in, then more of them, then the next span after the cut. Each window of ids shares
a long prefix with the sample's last one (`classifier` starts its windows at fixed points so that
it does). For a causal model the key/value cache of that prefix is all the model needs of it, so
the reader keeps, per sample `key`, the ids it read, their cache and their flags, and runs only
the ids after the shared prefix through the model.

Promises:
- **The flags of reading every window whole**, up to float rounding: the reader reads on only for
  a model whose logits, read on from a cache (in a padded batch, as `read` does it), check out
  against reading whole at load (`reads_on` is False otherwise, and every window is read whole).
- **Batched**: the windows of one call run in at most two forwards: those read from the start
  (right-padded), and those read on (their caches left-padded to the longest, the new ids
  right-padded); every row's positions are its own.
- **Bounded memory**: the kept caches take at most `budget_bytes` (the newest one always kept),
  least recently used dropped first; `forget(key)` drops one. `read` is called from one worker
  thread; `forget` from any.
- `tokens_read` counts the positions run through the model.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

from tessy.models import cache_argument

logger = logging.getLogger(__name__)

@dataclass
class Reading:
    """What was read of one sample: the window's ids, their key/value cache and their style flags."""

    ids: list[int]
    cache: Any
    style: list[bool]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.cache.layers for t in (layer.keys, layer.values))


class WindowReader:
    """Style flags of windows of ids, read on per sample where the model allows (module doc)."""

    def __init__(self, model: Any, *, style_label_id: int, pad_id: int, budget_bytes: int, causal: bool) -> None:
        self.model = model
        self.style_label_id = style_label_id
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self._cache_arg = cache_argument(model)
        self._readings: OrderedDict[str, tuple[Reading, int]] = OrderedDict()  # with its bytes
        self._lock = threading.Lock()
        self.budget_bytes = budget_bytes
        self.kept_bytes = 0
        self.tokens_read = 0
        self.reads_on = bool(budget_bytes > 0 and causal and self._cache_arg)
        self.reads_on = self.reads_on and self._reads_on_correctly()
        for key in list(self._readings):  # the check's
            self.forget(key)
        self.tokens_read = 0

    def read(self, windows: Sequence[list[int]], keys: Sequence[str]) -> list[list[bool]]:
        """The style flag at every position of each window; `keys[i]` names window i's sample
        (empty: read whole, keep nothing)."""
        return [flags for flags, _ in self._read(windows, keys)]

    def forget(self, key: str) -> None:
        with self._lock:
            self._take(key)

    # -- the reading ----------------------------------------------------------------------------

    def _read(self, windows: Sequence[list[int]], keys: Sequence[str]) -> list[tuple[list[bool], Any]]:
        """Per window: its style flags, and the logits of the positions run through the model."""
        keys = [key if self.reads_on else "" for key in keys]
        with self._lock:
            readings = [self._take(key) if key else None for key in keys]
        shared = [_common_prefix(reading.ids, window) if reading else 0 for reading, window in zip(readings, windows)]
        logits: list[Any] = [None] * len(windows)
        caches: list[Any] = [None] * len(windows)
        fresh = [row for row, count in enumerate(shared) if count == 0]
        onward = [row for row, count in enumerate(shared) if 0 < count < len(windows[row])]
        for rows in (fresh, onward):
            if rows:
                got = self._forward([windows[r] for r in rows], [shared[r] for r in rows],
                                    [readings[r] for r in rows], keep=[bool(keys[r]) for r in rows])
                for row, (row_logits, cache) in zip(rows, got):
                    logits[row], caches[row] = row_logits, cache
        results = []
        for row, window in enumerate(windows):
            flags = readings[row].style[: shared[row]] if shared[row] else []
            if logits[row] is not None:
                flags = flags + (logits[row].argmax(-1) == self.style_label_id).tolist()
            results.append((flags, logits[row]))
            if keys[row]:
                cache = caches[row] if caches[row] is not None else readings[row].cache
                self._store(keys[row], Reading(list(window), cache, flags))
        return results

    def _take(self, key: str) -> Reading | None:
        reading, nbytes = self._readings.pop(key, (None, 0))
        self.kept_bytes -= nbytes
        return reading

    def _store(self, key: str, reading: Reading) -> None:
        nbytes = reading.nbytes
        with self._lock:
            self._take(key)
            self._readings[key] = (reading, nbytes)
            self.kept_bytes += nbytes
            while self.kept_bytes > self.budget_bytes and len(self._readings) > 1:
                self._take(next(iter(self._readings)))

    def _forward(self, windows: list[list[int]], starts: list[int], readings: list[Reading | None],
                 keep: list[bool]) -> list[tuple[Any, Any]]:
        """Logits of `windows[i][starts[i]:]`, read on from `readings[i]`'s cache of its first
        `starts[i]` ids, in one forward; with `keep[i]`, row i's cache of the whole window."""
        import torch
        from transformers import DynamicCache

        rows, past = len(windows), max(starts)
        width = max(len(window) - start for window, start in zip(windows, starts))
        input_ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((rows, past + width), dtype=torch.long)
        positions = torch.zeros((rows, width), dtype=torch.long)
        for row, (window, start) in enumerate(zip(windows, starts)):
            new = window[start:]
            input_ids[row, : len(new)] = torch.tensor(new, dtype=torch.long)
            attention[row, past - start: past + len(new)] = 1  # the cache is left-padded to `past`
            positions[row] = torch.arange(start, start + width)
        with torch.inference_mode():
            cache = _padded_cache([r.cache for r in readings], starts, past) if past else (
                DynamicCache() if any(keep) else None)
            kwargs = {self._cache_arg: cache, "use_cache": True} if cache is not None else {}
            logits = self.model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                position_ids=positions.to(self.device), **kwargs).logits
            out = []
            for row, (window, start) in enumerate(zip(windows, starts)):
                end = len(window) - start
                row_cache = _cache_row(cache, row, past - start, past + end) if keep[row] else None
                out.append((logits[row, :end].float().cpu(), row_cache))
        self.tokens_read += sum(len(window) - start for window, start in zip(windows, starts))
        return out

    def _reads_on_correctly(self) -> bool:
        """Whether reading on (two samples of different lengths in one padded batch, one of them
        cut back) gives the logits of reading whole."""
        vocab = self.model.config.vocab_size
        first, second = [(5 + 7 * i) % vocab for i in range(14)], [(11 + 3 * i) % vocab for i in range(9)]
        try:
            self._read([first[:8], second[:5]], ["a", "b"])
            onward = self._read([first[:6] + first[9:], second], ["a", "b"])  # "a" shares 6 ids
            whole = self._read([first[:6] + first[9:], second], ["", ""])
        except Exception as exc:  # noqa: BLE001 - a model or cache that cannot read on: read whole
            logger.info("the predictor reads every window whole: reading on failed (%s: %s)", type(exc).__name__, exc)
            return False
        agree = all(logits_agree(got[1], full[1][-len(got[1]):]) for got, full in zip(onward, whole))
        if not agree:
            logger.info("the predictor reads every window whole: reading on changes its logits")
        return agree


def logits_agree(got: Any, expected: Any) -> bool:
    """Whether two logit tensors are the same up to float rounding (of the model's dtype)."""
    import torch

    return bool(torch.allclose(got.float(), expected.float(), rtol=1e-2,
                               atol=1e-3 * (1 + float(expected.float().abs().max()))))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def _padded_cache(caches: list[Any], lengths: list[int], past: int) -> Any:
    """One batch cache of the first `lengths[i]` positions of `caches[i]`, left-padded to `past`."""
    import torch
    from transformers import DynamicCache

    batch = DynamicCache()
    for index in range(len(caches[0].layers)):
        sample = caches[0].layers[index].keys
        heads, dim = sample.shape[1], sample.shape[3]
        keys = torch.zeros((len(caches), heads, past, dim), dtype=sample.dtype, device=sample.device)
        values = torch.zeros_like(keys)
        for row, (cache, length) in enumerate(zip(caches, lengths)):
            layer = cache.layers[index]
            keys[row, :, past - length:] = layer.keys[0, :, :length]
            values[row, :, past - length:] = layer.values[0, :, :length]
        batch.update(keys, values, index)
    return batch


def _cache_row(batch: Any, row: int, start: int, stop: int) -> Any:
    """Row `row`'s positions `start:stop` of a batch cache, as a cache of its own."""
    from transformers import DynamicCache

    part = DynamicCache()
    for index, layer in enumerate(batch.layers):
        part.update(layer.keys[row: row + 1, :, start:stop].clone(), layer.values[row: row + 1, :, start:stop].clone(),
                    index)
    return part
