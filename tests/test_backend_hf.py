"""HFBackend: KV-cache reuse, rollback, sampling, stop tokens, batched concurrent decoding.

Fast tests use tiny randomly initialised models (Llama, and Gemma 3 with a small sliding window)
saved with the real SmolLM2 tokenizer; `real_models` tests use the real demo weights.
"""

from __future__ import annotations

import asyncio

import pytest

from tessy.backends.base import SamplingParams
from tessy.backends.hf import HFBackend

GREEDY = SamplingParams(temperature=0.0)


def _save_tiny(path, config, tokenizer):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory, smol_tokenizer):
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
        bos_token_id=smol_tokenizer.bos_token_id, eos_token_id=smol_tokenizer.eos_token_id,
    )
    return _save_tiny(tmp_path_factory.mktemp("tiny-llama"), config, smol_tokenizer)


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory, smol_tokenizer):
    from transformers import Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=8,
        layer_types=["sliding_attention", "full_attention"] * 2, max_position_embeddings=256,
        initializer_range=0.2, pad_token_id=0,
    )
    return _save_tiny(tmp_path_factory.mktemp("tiny-gemma"), config, smol_tokenizer)


@pytest.fixture(scope="module")
def llama(tiny_llama):
    return HFBackend(tiny_llama, device="cpu", max_batch=4)


def _run(coro):
    return asyncio.run(coro)


def _gen(backend, seq_id, context, n, sampling=GREEDY, stop=frozenset()):
    return _run(backend.generate(seq_id, context, n, sampling, stop))


def _recompute(model, context, n):
    """Greedy continuation by full forwards without any cache: the reference."""
    import torch

    ids = list(context)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(context):]


def _prompt(tokenizer, text):
    return tokenizer(text).input_ids


def test_greedy_rollback_continue_equals_recompute(llama):
    prompt = _prompt(llama.tokenizer, "Question: what is 12 times 7? Let me think")
    g = _gen(llama, "a", prompt, 12)
    assert g.finish_reason == "length" and len(g.token_ids) == 12
    assert g.token_ids == _recompute(llama.model, prompt, 12)
    assert g.text == llama.tokenizer.decode(g.token_ids, skip_special_tokens=False)
    # keep 5 tokens, splice in a handed-over token, continue: still equals a from-scratch recompute
    llama.rollback("a", len(prompt) + 5)
    context = prompt + g.token_ids[:5] + _prompt(llama.tokenizer, " Wait")
    before = llama.stats.prefill_tokens
    g2 = _gen(llama, "a", context, 10)
    assert llama.stats.prefill_tokens - before == len(context) - len(prompt) - 5
    assert g2.token_ids == _recompute(llama.model, context, 10)


def test_cache_is_reused_not_refilled(llama):
    prompt = _prompt(llama.tokenizer, "The quick brown fox jumps over the lazy dog because")
    stats = llama.stats
    before = stats.prefill_tokens
    g = _gen(llama, "reuse", prompt, 6)
    assert stats.prefill_tokens - before == len(prompt)
    # continuing the whole output: only the last sampled token (never fed yet) is prefilled
    before = stats.prefill_tokens
    g2 = _gen(llama, "reuse", prompt + g.token_ids, 6)
    assert stats.prefill_tokens - before == 1
    # same context again (cache covers all of it): one token is re-fed for its logits
    ctx = prompt + g.token_ids + g2.token_ids[:-1]
    before = stats.prefill_tokens
    g3 = _gen(llama, "reuse", ctx, 1)
    assert stats.prefill_tokens - before == 1
    assert g3.token_ids == g2.token_ids[-1:]


def test_rollback_shorter_then_continue_differs_only_after_prefix(llama):
    prompt = _prompt(llama.tokenizer, "Once upon a time, in a land far away,")
    g = _gen(llama, "rb", prompt, 10)
    llama.rollback("rb", len(prompt) + 3)
    before = llama.stats.prefill_tokens
    g2 = _gen(llama, "rb", prompt + g.token_ids[:3], 7)
    assert llama.stats.prefill_tokens - before == 1  # cache kept the prefix
    assert g2.token_ids == g.token_ids[3:]  # greedy from the same prefix: the same tokens
    # a different token after the kept prefix changes what follows, and matches a recompute
    llama.rollback("rb", len(prompt) + 3)
    other = prompt + g.token_ids[:3] + [(g.token_ids[3] + 1) % len(llama.tokenizer)]
    g3 = _gen(llama, "rb", other, 6)
    assert g3.token_ids == _recompute(llama.model, other, 6)
    llama.release("rb")
    before = llama.stats.prefill_tokens
    _gen(llama, "rb", other, 1)
    assert llama.stats.prefill_tokens - before == len(other)


def test_stop_token_is_last_and_reported(llama):
    prompt = _prompt(llama.tokenizer, "List three colours:")
    g = _gen(llama, "stop-ref", prompt, 12)
    i = next(i for i, t in enumerate(g.token_ids) if i >= 2 and t not in g.token_ids[:i])
    s = _gen(llama, "stop", prompt, 12, stop=frozenset({g.token_ids[i]}))
    assert s.finish_reason == "stop"
    assert s.token_ids == g.token_ids[: i + 1]


def test_seeded_sampling_is_reproducible(llama):
    prompt = _prompt(llama.tokenizer, "Random words:")
    sp = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=123)
    a = _gen(llama, "s1", prompt, 12, sp)
    b = _gen(llama, "s2", prompt, 12, sp)
    c = _gen(llama, "s3", prompt, 12, SamplingParams(temperature=1.0, top_p=0.9, top_k=50, seed=7))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    # the stream carries on across calls of one sequence, the same way for every run
    a2 = _gen(llama, "s1", prompt + a.token_ids, 8, sp)
    b2 = _gen(llama, "s2", prompt + b.token_ids, 8, sp)
    assert a2.token_ids == b2.token_ids


def test_max_context_is_enforced(llama):
    assert llama.max_context == 256
    with pytest.raises(ValueError, match="max_context"):
        _gen(llama, "long", [1] * 250, 10)


async def _rounds(backend, prompts, n, sampling_for, prefix):
    """Each sequence generates, then continues its own output (like the engine's steps)."""

    async def one(i, prompt):
        sp = sampling_for(i)
        g1 = await backend.generate(f"{prefix}{i}", prompt, n, sp)
        await asyncio.sleep(0.001 * i)  # stagger: later rows join a batch already decoding
        g2 = await backend.generate(f"{prefix}{i}", prompt + g1.token_ids, n, sp)
        return g1.token_ids + g2.token_ids

    return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))


def _concurrent_equals_sequential(backend, tokenizer):
    texts = ["Hi", "The capital of France is", "def fib(n):\n    return", "1, 2, 3, 4,", "Why is the sky"]
    prompts = [_prompt(tokenizer, t) for t in texts]

    def sampling_for(i):
        return GREEDY if i % 2 == 0 else SamplingParams(temperature=0.8, top_p=0.95, seed=i)

    sequential = [_run(_rounds(backend, [p], 8, lambda _, i=i: sampling_for(i), f"seq{i}-"))[0]
                  for i, p in enumerate(prompts)]
    backend.stats.max_batch_seen = 0
    concurrent = _run(_rounds(backend, prompts, 8, sampling_for, "con"))
    assert backend.stats.max_batch_seen > 1  # rows really were decoded together
    assert concurrent == sequential


def test_concurrent_generate_equals_sequential(llama):
    _concurrent_equals_sequential(llama, llama.tokenizer)


@pytest.mark.slow
def test_gemma3_sliding_window_cache_crop_and_batching(tiny_gemma):
    backend = HFBackend(tiny_gemma, device="cpu", max_batch=4)
    prompt = _prompt(backend.tokenizer, "A long enough prompt to pass the sliding window of eight")
    assert len(prompt) > 8
    g = _gen(backend, "g", prompt, 16)
    assert g.token_ids == _recompute(backend.model, prompt, 16)
    # roll back to before the window's start, change a token, continue
    backend.rollback("g", len(prompt) + 2)
    other = prompt + g.token_ids[:2] + [g.token_ids[2] ^ 1]
    g2 = _gen(backend, "g", other, 12)
    assert g2.token_ids == _recompute(backend.model, other, 12)
    _concurrent_equals_sequential(backend, backend.tokenizer)


# ---- real weights ------------------------------------------------------------------------------


def _reference_generate(backend, context, n):
    import torch

    with torch.inference_mode():
        ids = torch.tensor([context])
        out = backend.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=n, min_new_tokens=n)
    return out[0, len(context):].tolist()


@pytest.mark.real_models
def test_real_smollm2_greedy_matches_generate():
    backend = HFBackend("smollm2-135m-instruct", device="cpu")
    text = backend.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 7 times 8?"}], add_generation_prompt=True, tokenize=False,
    )
    prompt = backend.tokenizer(text, add_special_tokens=False).input_ids
    g = _gen(backend, "smol", prompt, 16)
    assert g.token_ids == _reference_generate(backend, prompt, 16)
    # continuing in two halves through the cache gives the same tokens
    h1 = _gen(backend, "smol2", prompt, 8)
    h2 = _gen(backend, "smol2", prompt + h1.token_ids, 8)
    assert h1.token_ids + h2.token_ids == g.token_ids


@pytest.mark.real_models
def test_real_gemma_greedy_rollback_and_continue():
    backend = HFBackend("gemma3-270m", device="cpu")
    prompt = _prompt(backend.tokenizer, "The three largest planets in the solar system are")
    g = _gen(backend, "gem", prompt, 16)
    assert g.token_ids == _reference_generate(backend, prompt, 16)
    backend.rollback("gem", len(prompt) + 4)
    context = prompt + g.token_ids[:4] + _prompt(backend.tokenizer, " Wait,")[1:]  # drop <bos>
    g2 = _gen(backend, "gem", context, 12)
    assert g2.token_ids == _reference_generate(backend, context, 12)


def test_a_shared_prefix_is_prefilled_once_and_changes_no_output(tiny_llama):
    plain, shared = HFBackend(tiny_llama), HFBackend(tiny_llama)
    preamble = _prompt(plain.tokenizer, "You are a careful assistant. Example: 2 + 2 = 4. Example: 3 + 5 = 8.")
    shared.share_prefix(preamble)
    questions = ["Question: what is 12 times 7?", "Question: name a prime above 20."]
    for number, question in enumerate(questions):
        context = preamble + _prompt(plain.tokenizer, question)
        expected = _gen(plain, f"s{number}", context, 8)
        before = shared.stats.prefill_tokens
        got = _gen(shared, f"s{number}", context, 8)
        assert got.token_ids == expected.token_ids == _recompute(plain.model, context, 8)
        # the first sequence also builds the prefix's cache; every one prefills only its own part
        built = len(preamble) if number == 0 else 0
        assert shared.stats.prefill_tokens - before == built + len(context) - len(preamble)
    # a prompt that does not start with the prefix is prefilled whole
    other = _prompt(plain.tokenizer, "Another prompt entirely")
    before = shared.stats.prefill_tokens
    assert _gen(shared, "o", other, 4).token_ids == _recompute(plain.model, other, 4)
    assert shared.stats.prefill_tokens - before == len(other)
