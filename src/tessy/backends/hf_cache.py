"""KV-cache surgery for the in-process backend (`tessy.backends.hf`): plain functions over
transformers `DynamicCache`s of full-attention layers, holding no state of their own.

Promises: `crop` keeps exactly a prefix of a sequence's cache and ids; `stack` left-pads the
rows' caches into one batched cache and `unstack` gives each row back exactly its own, unpadded;
`select` keeps some rows of a batch, less the padding they all share, and returns the same
object when nothing is dropped. torch and transformers load when a function is called.
"""

from __future__ import annotations

from typing import Any


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading ids `a` and `b` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def crop(seq: Any, length: int) -> None:
    """Keep the first `length` tokens of `seq.cache` and `seq.ids` (a `hf._Seq`; None: nothing)."""
    if seq is None or seq.cache is None or length >= len(seq.ids):
        return
    if length <= 0:
        seq.cache, seq.ids = None, []
        return
    seq.cache.crop(length - len(seq.ids))  # negative: tokens to remove
    seq.ids = seq.ids[:length]


def stack(caches: list[Any]) -> tuple[Any, list[int]]:
    """One cache for the rows, left-padded to the longest, and each row's padding; a single row
    uses its own cache."""
    import torch
    from transformers import DynamicCache

    if len(caches) == 1:
        return caches[0], [0]
    lengths = [c.get_seq_length() for c in caches]
    pads = [max(lengths) - n for n in lengths]
    layers = []
    for layer_idx in range(len(caches[0].layers)):
        ks, vs = [], []
        for c, p in zip(caches, pads):
            layer = c.layers[layer_idx]
            ks.append(torch.nn.functional.pad(layer.keys, (0, 0, p, 0)))
            vs.append(torch.nn.functional.pad(layer.values, (0, 0, p, 0)))
        layers.append((torch.cat(ks), torch.cat(vs)))
    return DynamicCache(layers), pads


def unstack(cache: Any, pads: list[int]) -> list[Any]:
    """Each row's own (unpadded) cache, copied out of the batched one."""
    from transformers import DynamicCache

    return [DynamicCache([(layer.keys[i : i + 1, :, p:].clone(), layer.values[i : i + 1, :, p:].clone())
                          for layer in cache.layers])
            for i, p in enumerate(pads)]


def select(batch: tuple[Any, list[int]], indices: list[int]) -> tuple[Any, list[int]]:
    """The batched cache restricted to some rows, less padding they all share (the same object
    when nothing is dropped)."""
    import copy

    import torch

    cache, pads = batch
    if len(indices) == len(pads):
        return batch
    picked = copy.copy(cache)
    picked.layers = [copy.copy(layer) for layer in cache.layers]
    picked.batch_select_indices(torch.tensor(indices, device=cache.layers[0].keys.device))
    pads = [pads[i] for i in indices]
    trim = min(pads)  # padding columns no remaining row needs
    if trim:
        for layer in picked.layers:
            layer.keys, layer.values = layer.keys[:, :, trim:], layer.values[:, :, trim:]
    return picked, [p - trim for p in pads]
