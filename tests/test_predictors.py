"""Boundary predictors: the lexicon rules on real tokenizations, `cut_index`, and the classifier
on tiny hand-wired token-classification checkpoints whose verdicts are known in advance (and, for
reading on, a random one whose verdicts are checked against reading every window whole)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tessy.predictors import LexiconPredictor, SpanQuery, cut_index, find_style_spans, load_predictor
from tessy.predictors.base import fill_whitespace_verdicts
from tessy.predictors.lexicon import label_pieces

QWEN_LIKE = (
    "Okay, let's see. I need to figure out how many apples Tom has left. The problem says he starts "
    "with 12 apples and gives away 5. So 12 - 5 = 7.\n\nWait, but how about the ones he buys? Hmm, "
    "let me check the problem again. First, he buys 3 more, so 7 + 3 = 10. I think the answer is 10."
)
GPT_OSS_LIKE = "We need to compute x = 3*4 = 12. Then y = x + 5 = 17. Output 17."


def pieces_of(tokenizer, text: str) -> tuple[str, ...]:
    return tuple(tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False))


def style_words(text: str) -> list[str]:
    return [text[a:b] for a, b in find_style_spans(text)]


def run(coro):
    return asyncio.run(coro)


# -- lexicon ---------------------------------------------------------------------------------


def test_find_style_spans_covers_the_categories():
    # phrases only whitespace apart are merged into one range
    assert style_words(QWEN_LIKE) == [
        "Okay, let's see. I need to figure out", "The problem says", "So", "Wait, but how about",
        "Hmm, let me check", "First,", "so", "I think",
    ]
    text = "Alright, so the list is sorted.\n- Next, we check: Well, now, on the other hand, for example n = 0."
    assert style_words(text) == ["Alright, so", "Next,", "Well, now, on the other hand, for example"]


@pytest.mark.parametrize(
    "text",
    [
        "The sum as well as the product is even.",
        "It is a well-known bound; so many cases fail.",
        "First element is 3 and next element is 4.",
        "The okay_flag variable is set, the ok value too.",
        "x is so large that we wait for it.",
        "def f():\n    now = time.time()\n    ok = True\n    so.x = well(3)\n    return now",
    ],
)
def test_ambiguous_words_are_capability_outside_clause_starts(text):
    assert find_style_spans(text) == []


def test_clause_openers_chain_and_take_their_punctuation():
    assert style_words("Hmm... Okay, so, wait — let me think. x = 2") == ["Hmm... Okay, so, wait — let me think."]
    assert style_words("x = 2, so y = 4. But if y > 3, then z = 1.") == ["so", "But if"]


@pytest.mark.parametrize("tok_name", ["smol_tokenizer", "gemma_tokenizer"])
def test_lexicon_on_qwen_like_text_with_real_pieces(tok_name, request):
    tokenizer = request.getfixturevalue(tok_name)
    pieces = pieces_of(tokenizer, QWEN_LIKE)
    verdicts = run(LexiconPredictor().label(SpanQuery("", pieces)))
    assert len(verdicts) == len(pieces)
    style = "".join(p for p, s in zip(pieces, verdicts) if s)
    for phrase in ("Okay,", " let", " see.", " need to figure out", "Wait,", " but how", "Hmm,", " check", "First,"):
        assert phrase in style, phrase
    for piece, is_style in zip(pieces, verdicts):
        if any(ch.isdigit() for ch in piece) or piece.strip() in ("apples", "Tom", "answer"):
            assert not is_style, piece


@pytest.mark.parametrize("tok_name", ["smol_tokenizer", "gemma_tokenizer"])
def test_lexicon_on_gpt_oss_like_text_is_mostly_capability(tok_name, request):
    pieces = pieces_of(request.getfixturevalue(tok_name), GPT_OSS_LIKE)
    verdicts = label_pieces("", pieces)
    assert sum(verdicts) / len(verdicts) < 0.3
    assert not any(v for p, v in zip(pieces, verdicts) if any(ch.isdigit() or ch in "=*+" for ch in p))


def test_lexicon_sees_the_context_join(smol_tokenizer, monkeypatch):
    # a phrase spanning the join is seen; sentence starts are judged with the context
    assert label_pieces("Okay, let's", pieces_of(smol_tokenizer, " see. x = 1"))[:2] == [True, True]
    assert label_pieces("x = 3.", pieces_of(smol_tokenizer, " So y = 4"))[0] is True
    assert label_pieces("x is", pieces_of(smol_tokenizer, " so large"))[0] is False
    # a long context is scanned only at its tail (at most context_chars), cut mid-sentence
    from tessy.predictors import lexicon

    scanned = []
    real_mask = lexicon.style_char_mask

    def spy(text, **kwargs):
        scanned.append(text)
        return real_mask(text, **kwargs)

    monkeypatch.setattr(lexicon, "style_char_mask", spy)
    long_context = "The value is computed. " * 2000 + "and it is"
    assert label_pieces(long_context, (" so", " big")) == [False, False]
    assert len(scanned) == 1 and len(scanned[0]) <= 200 + len(" so big")
    assert scanned[0].endswith("and it is so big") and long_context.endswith(scanned[0][:-len(" so big")])
    assert label_pieces(long_context + ". ", ("Wait", ",", " no")) == [True, True, False]


def test_whitespace_pieces_follow_their_neighbours():
    assert fill_whitespace_verdicts([None, True, None, False, None]) == [True, True, True, False, False]
    assert fill_whitespace_verdicts([None, None]) == [False, False]
    assert label_pieces("", ("\n\n", "Wait", ",", " ", "3", "\n")) == [True, True, True, True, False, False]
    assert label_pieces("", (" ", "\n")) == [False, False]
    assert label_pieces("", ()) == []


# -- cut_index ------------------------------------------------------------------------------


def test_cut_index_both_roles():
    assert cut_index("teacher", [False, False, True, False]) == 2
    assert cut_index("teacher", [True, False]) == 0  # a first-token cut
    assert cut_index("teacher", [False, False]) is None
    assert cut_index("student", [True, True, False]) == 2
    assert cut_index("student", [False, True]) == 0
    assert cut_index("student", [True]) is None
    assert cut_index("teacher", []) is None
    with pytest.raises(ValueError):
        cut_index("judge", [True])


def test_cut_index_with_the_lexicon_on_real_pieces(gemma_tokenizer, smol_tokenizer):
    teacher = pieces_of(gemma_tokenizer, "\n\nWait, but how does x = 3 hold?")
    assert cut_index("teacher", label_pieces("x = 3.", teacher)) == 0
    teacher = pieces_of(gemma_tokenizer, " x = 3*4 = 12. Hmm, so")
    assert "".join(teacher[: cut_index("teacher", label_pieces("We get", teacher))]) == " x = 3*4 = 12."
    student = pieces_of(smol_tokenizer, "Okay, let's see. The grid has 4 rows")
    assert "".join(student[: cut_index("student", label_pieces("", student))]) == "Okay, let's see."


# -- load_predictor -------------------------------------------------------------------------


def test_load_predictor_choices(tmp_path):
    assert isinstance(load_predictor("lexicon"), LexiconPredictor)
    with pytest.raises(ValueError, match="lexicon"):
        load_predictor("no-such-predictor")
    with pytest.raises(ValueError, match="not a folder"):
        (tmp_path / "f.txt").write_text("x")
        load_predictor(str(tmp_path / "f.txt"))


# -- classifier -----------------------------------------------------------------------------

MARKERS = ("Wait", " Wait")


def build_checkpoint(path, tokenizer, *, arch="llama", num_labels=2, head=True, base_only=False, **config_extra):
    """A tiny checkpoint whose head says class 1 exactly at the tokens in MARKERS.

    All attention and MLP outputs are zeroed, so the final hidden state at token i is the
    normalised embedding of token i; dimension 0 of the embeddings is 1 for markers, 0 otherwise,
    and the head reads class-1 logit = dim 0, class-0 logit = 0.5.
    """
    import torch
    import transformers as tf

    common = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, num_labels=num_labels, **config_extra)
    if arch == "qwen3":
        config, cls = tf.Qwen3Config(head_dim=16, **common), tf.Qwen3ForTokenClassification
    else:
        config, cls = tf.LlamaConfig(**common), tf.LlamaForTokenClassification
    if not head:
        cls = tf.LlamaModel if base_only else tf.LlamaForCausalLM
    torch.manual_seed(0)
    model = cls(config)
    with torch.no_grad():
        base = model if base_only else model.model
        for layer in base.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = base.embed_tokens.weight
        embed[:, 0] = 0.0
        for marker in MARKERS:
            (marker_id,) = tokenizer.encode(marker, add_special_tokens=False)
            embed[marker_id, 0] = 1.0
        if head:
            model.score.weight.zero_()
            model.score.weight[1, 0] = 1.0
            model.score.bias.copy_(torch.tensor([0.5] + [0.0] * (num_labels - 1)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, smol_tokenizer):
    root = tmp_path_factory.mktemp("predictors")
    return {
        "offset0": build_checkpoint(root / "o0", smol_tokenizer, tessy_style_label_id=1, tessy_label_offset=0),
        "offset1": build_checkpoint(root / "o1", smol_tokenizer, tessy_style_label_id=1, tessy_label_offset=1),
        "named": build_checkpoint(root / "named", smol_tokenizer, id2label={0: "capability", 1: "style"},
                                  label2id={"capability": 0, "style": 1}, tessy_label_offset=0),
        "paper": build_checkpoint(root / "paper", smol_tokenizer, arch="qwen3"),
    }


def classify(path, context, pieces, **options):
    async def go():
        predictor = load_predictor(path, **options)
        try:
            return await predictor.label(SpanQuery(context, tuple(pieces)))
        finally:
            await predictor.aclose()

    return run(go())


@pytest.mark.slow
def test_classifier_offset_semantics(checkpoints, smol_tokenizer):
    pieces = pieces_of(smol_tokenizer, " Wait, so x = 3")
    n = len(pieces)
    assert classify(checkpoints["offset0"], "y = 2.", pieces) == [True] + [False] * (n - 1)
    assert classify(checkpoints["offset1"], "y = 2.", pieces) == [False, True] + [False] * (n - 2)
    # the first piece gets a verdict too: from the context (offset 1) or with nothing before it
    assert classify(checkpoints["offset1"], "y = 2. Wait", pieces_of(smol_tokenizer, ", so x"))[0] is True
    assert classify(checkpoints["offset1"], "", pieces_of(smol_tokenizer, "Wait, so")) == [False, True, False]
    assert classify(checkpoints["offset0"], "", pieces_of(smol_tokenizer, "Wait, so")) == [True, False, False]
    # a style id read from id2label names; the override arguments win over the config
    assert classify(checkpoints["named"], "y = 2.", pieces) == [True] + [False] * (n - 1)
    assert classify(checkpoints["offset1"], "y = 2.", pieces, label_offset=0, style_label_id=0) == (
        [False] + [True] * (n - 1))


@pytest.mark.slow
def test_classifier_maps_through_character_offsets(checkpoints, gemma_tokenizer):
    # the generating tokenizer (Gemma) splits differently from the classifier's (SmolLM2)
    pieces = pieces_of(gemma_tokenizer, "Hmm. Wait, so x = 3\n\nWait")
    expected0 = [p.strip() == "Wait" for p in pieces]
    assert classify(checkpoints["offset0"], "Okay. ", pieces) == expected0
    expected1 = [False] + expected0[:-1]
    expected1[pieces.index("\n\n")] = expected1[pieces.index("\n\n") - 1]  # whitespace follows its left neighbour
    assert classify(checkpoints["offset1"], "Okay. ", pieces) == expected1
    assert classify(checkpoints["offset0"], "ctx " * 2000, pieces, max_context_tokens=8) == expected0


@pytest.mark.slow
def test_paper_shaped_checkpoint_loads_with_the_fallback(checkpoints, smol_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="tessy.predictors.classifier"):
        predictor = load_predictor(checkpoints["paper"])
    assert (predictor.style_label_id, predictor.label_offset) == (1, 1)
    assert "paper's convention" in caplog.text
    pieces = pieces_of(smol_tokenizer, " Wait, so")
    assert run(predictor.label(SpanQuery("y.", pieces))) == [False, True, False]
    run(predictor.aclose())


@pytest.mark.slow
def test_classifier_refuses_bad_checkpoints(tmp_path, smol_tokenizer):
    from tessy.predictors.classifier import PredictorLoadError

    causal = build_checkpoint(tmp_path / "causal", smol_tokenizer, head=False)
    with pytest.raises(PredictorLoadError, match="head is missing"):
        load_predictor(causal)
    base = build_checkpoint(tmp_path / "base", smol_tokenizer, head=False, base_only=True)
    with pytest.raises(PredictorLoadError, match="head is missing"):
        load_predictor(base)
    three = build_checkpoint(tmp_path / "three", smol_tokenizer, num_labels=3)
    with pytest.raises(PredictorLoadError, match="num_labels=3"):
        load_predictor(three)
    from tessy.predictors.classifier import ClassifierPredictor

    with pytest.raises(FileNotFoundError, match="not found"):
        ClassifierPredictor(str(tmp_path / "missing"))


@pytest.mark.slow
def test_concurrent_labels_are_batched(checkpoints, smol_tokenizer):
    texts = ["Wait, so x = 3", " then Wait", "y = 1 + 2 + 3 + 4 + 5 + 6 Wait", "no", " Wait Wait", "z"]
    queries = [SpanQuery(f"ctx {i}.", pieces_of(smol_tokenizer, t)) for i, t in enumerate(texts)]

    async def go():
        predictor = load_predictor(checkpoints["offset1"], max_batch=4)
        batched = await asyncio.gather(*(predictor.label(q) for q in queries))
        batches = predictor.batches
        one_by_one = [await predictor.label(q) for q in queries]
        seconds = predictor.predict_seconds
        await predictor.aclose()
        return batched, batches, one_by_one, seconds

    batched, batches, one_by_one, seconds = run(go())
    assert batches == 2 < len(queries)
    assert batched == one_by_one
    assert seconds > 0
    assert batched[4] == [False, True]  # offset 1: the second " Wait" is labelled at the first


@pytest.mark.slow
def test_reading_on_gives_the_verdicts_of_reading_whole(tmp_path, smol_tokenizer):
    """A sample's queries, as a streamed run asks them (a span's first 1, 2, 4 tokens, then all of
    it; the next span after a cut), labelled by a classifier with attention at work: keeping what
    it read per sample gives the verdicts of reading every window whole, reading far fewer
    positions; the window moves on as the text grows (16 tokens of context at most)."""
    import torch
    import transformers as tf

    config = tf.LlamaConfig(vocab_size=len(smol_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, num_labels=2, tessy_label_offset=1,
                            tessy_style_label_id=1)
    torch.manual_seed(1)
    model = tf.LlamaForTokenClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 2.0)  # verdicts far from ties: float rounding cannot flip them
    model.save_pretrained(tmp_path / "mixing")
    smol_tokenizer.save_pretrained(tmp_path / "mixing")

    def streamed(key: str, text: str) -> list[SpanQuery]:
        pieces, queries, start = pieces_of(smol_tokenizer, text), [], 0
        while start < len(pieces):
            span = pieces[start:start + 12]
            context = "".join(pieces[:start])
            queries += [SpanQuery(context, span[:n], key=key) for n in (1, 2, 4) if n < len(span)]
            queries.append(SpanQuery(context, span, key=key))
            start += 7  # the cut keeps 7 of each span
        return queries

    # two samples asked together, so their windows are read on in one padded batch
    pairs = list(zip(streamed("a", QWEN_LIKE * 3), streamed("b", GPT_OSS_LIKE * 5)))

    async def label_all(**options):
        predictor = load_predictor(str(tmp_path / "mixing"), max_context_tokens=16, **options)
        try:
            return [await asyncio.gather(*(predictor.label(q) for q in pair)) for pair in pairs], predictor
        finally:
            await predictor.aclose()

    read_on, kept = run(label_all())
    whole, plain = run(label_all(cache_mb=0))
    assert kept.reads_on and not plain.reads_on
    assert kept.batches == len(pairs)
    assert read_on == whole
    flags = [flag for pair in whole for verdicts in pair for flag in verdicts]
    assert 0.1 < sum(flags) / len(flags) < 0.9  # the model says both things: the comparison can fail
    assert kept.tokens_read * 3 < plain.tokens_read
    queries = [pair[0] for pair in pairs]
    whole = [pair[0] for pair in whole]

    async def after_forget():
        predictor = load_predictor(str(tmp_path / "mixing"), max_context_tokens=16)
        try:
            first = await predictor.label(queries[-1])
            read = predictor.tokens_read
            await predictor.label(queries[-1])
            again = predictor.tokens_read - read
            predictor.forget("a")
            assert predictor.reader.kept_bytes == 0
            await predictor.label(queries[-1])
            return first, again, predictor.tokens_read - read - again, read
        finally:
            await predictor.aclose()

    first, again, after, read = run(after_forget())
    assert first == whole[-1]
    assert again == 0 and after == read  # the same window again reads nothing; forgotten, all of it

    async def over_budget():  # room for one sample's reading: the other's goes
        predictor = load_predictor(str(tmp_path / "mixing"), max_context_tokens=16, cache_mb=1e-6)
        try:
            a, b = pairs[-1]
            await predictor.label(a)
            first = predictor.tokens_read
            await predictor.label(b)
            read = predictor.tokens_read
            await predictor.label(a)
            return first, predictor.tokens_read - read
        finally:
            await predictor.aclose()

    first, again = run(over_budget())
    assert again == first > 0


@pytest.mark.slow
def test_context_window_starts_at_fixed_points(checkpoints, smol_tokenizer):
    """Between half and all of `max_context_tokens` tokens of context, and while the text grows
    the window keeps its first ids (so a sample's next query shares them) until it moves on."""
    predictor = load_predictor(checkpoints["offset0"], max_context_tokens=16)
    pieces = pieces_of(smol_tokenizer, QWEN_LIKE * 2)
    starts, queries, previous = 0, 0, None
    for end in range(40, len(pieces) - 3):
        if not pieces[end].strip():
            continue
        queries += 1
        ids, targets = predictor._encode(SpanQuery("".join(pieces[:end]), pieces[end:end + 3]))
        assert 8 <= targets[0] < 16  # the span's first token comes after 8..15 tokens of context
        if previous is not None and ids[:4] != previous[:4]:
            starts += 1
        previous = ids
    assert 2 <= starts <= queries // 4  # it moves on now and then (half a window of tokens, 64 characters)
    run(predictor.aclose())
