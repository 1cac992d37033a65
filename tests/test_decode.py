"""Decoding never breaks a character: the incremental decoder on a byte-level test tokenizer and on
the real SmolLM2 (byte-level BPE), Gemma (SentencePiece with byte fallback) and Qwen3 tokenizers,
with multi-byte text (math symbols, accents, CJK, emoji) split at every token."""

from __future__ import annotations

import pytest

from tessy.engine.decode import IncrementalDecoder, Pieces, fit
from tessy.engine.cuts import word_boundary_at_or_before
from tests.byte_tokenizer import build_byte_tokenizer

TEXT = "𝔼[X] ≤ ∑ café 北京 🙂 naïve — ok.\n北京欢迎你🙂🙂 x²+y²"


@pytest.fixture(params=["byte", "smol", "gemma", "qwen3"])
def tokenizer(request):
    if request.param == "byte":
        return build_byte_tokenizer()
    return request.getfixturevalue({"smol": "smol_tokenizer", "gemma": "gemma_tokenizer",
                                    "qwen3": "qwen3_tokenizer"}[request.param])


def decode_all(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def test_pieces_join_to_the_text_with_no_replacement_character(tokenizer):
    context = tokenizer.encode("Question: say it.\nAnswer:", add_special_tokens=False)
    ids = tokenizer.encode(" " + TEXT, add_special_tokens=False)
    pieces = Pieces()
    pieces.add(IncrementalDecoder(tokenizer, context), ids)
    assert pieces.text == decode_all(tokenizer, context + ids)[len(decode_all(tokenizer, context)):]
    assert TEXT in pieces.text and "\ufffd" not in pieces.text
    # A token is on a character boundary exactly when the text up to it decodes without a half character.
    for index in range(len(ids)):
        assert pieces.boundary[index] == (not decode_all(tokenizer, ids[: index + 1]).endswith("\ufffd")), index


def test_byte_tokenizer_splits_every_multibyte_character():
    tokenizer = build_byte_tokenizer()
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(ids) == len(TEXT.encode("utf-8"))
    pieces = Pieces()
    pieces.add(IncrementalDecoder(tokenizer), ids)
    assert pieces.text == TEXT
    assert pieces.boundary.count(True) == len(TEXT)  # one boundary per character
    assert pieces.texts[:5] == ["", "", "", "𝔼", "["]


def test_a_decoder_started_at_any_character_boundary_continues_exactly(tokenizer):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    whole = Pieces()
    whole.add(IncrementalDecoder(tokenizer), ids)
    for split in range(1, len(ids)):
        if not whole.boundary[split - 1]:
            continue
        rest = Pieces()
        rest.add(IncrementalDecoder(tokenizer, ids[:split]), ids[split:])
        assert whole.text_before(split) + rest.text == whole.text, split


def test_cuts_and_budget_trims_fall_on_character_boundaries():
    tokenizer = build_byte_tokenizer()
    pieces = Pieces()
    pieces.add(IncrementalDecoder(tokenizer), tokenizer.encode("北京 ok", add_special_tokens=False))
    assert [pieces.char_boundary_at_or_before(n) for n in range(10)] == [0, 0, 0, 3, 3, 3, 6, 7, 8, 9]
    count = lambda p, n: n  # noqa: E731  (own tokens)
    assert fit(pieces, 9, count, 5) == 3 and fit(pieces, 9, count, 2) == 0 and fit(pieces, 9, count, 99) == 9
    # A budget cut of a model that would go on: keep "北京 ", not half of "ok".
    assert word_boundary_at_or_before(pieces, 9, open_end=True) == 7
    assert word_boundary_at_or_before(pieces, 9, open_end=False) == 9  # the text really ends there
    assert word_boundary_at_or_before(pieces, 5) == 3  # never inside a character; 北|京 is a boundary
    latin = Pieces()
    latin.add(IncrementalDecoder(tokenizer), tokenizer.encode("café ok", add_special_tokens=False))
    assert word_boundary_at_or_before(latin, 4) == 0  # "caf|é" is inside a word
