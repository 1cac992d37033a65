"""How the in-process backend (`tessy.backends.hf`) draws a token from a model's logits.

Promises: greedy when temperature <= 0, else temperature, then top-k, then top-p (the smallest
set of tokens reaching it). With a seed, the draw for the token at position p of a sequence
comes from the generator seeded with (seed, p), so it depends only on the logits, the seed and
the position. torch loads when `sample` is called.
"""

from __future__ import annotations

import hashlib
from typing import Any

from tessy.backends.base import SamplingParams


def sample(logits: Any, sampling: SamplingParams, position: int, generator: Any) -> int:
    """The token drawn from one row of `logits` for the token at `position` of its sequence."""
    import torch

    sp = sampling
    if sp.greedy:
        return int(torch.argmax(logits))
    if sp.seed is not None:  # the draw depends on the seed and the position only
        generator.manual_seed(draw_seed(sp.seed, position))
    logits = logits / sp.temperature
    if sp.top_k and sp.top_k < logits.shape[-1]:
        kth = torch.topk(logits, sp.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sp.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = torch.cumsum(probs, dim=-1) - probs > sp.top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


def draw_seed(seed: int, position: int) -> int:
    """The generator seed for the draw at `position` of a sequence sampled with `seed`."""
    digest = hashlib.blake2b(f"{seed}:{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
