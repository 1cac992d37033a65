"""Voices: a preamble one model sees before every prompt, never written into records."""

from __future__ import annotations

import asyncio
import json

import pytest

from tessy.backends.fake import ScriptedBackend
from tessy.config import SynthesizeConfig
from tessy.engine import Engine, Party
from tessy.formats import Qwen3Format
from tessy.voices import VOICES, load_voice, with_voice
from tests.test_engine import KeywordPredictor

PROMPT = [{"role": "user", "content": "Add 2 and 3."}]


def test_builtin_voices_are_think_tag_conversations():
    for name, messages in VOICES.items():
        assert load_voice(name) == messages and load_voice(name) is not messages
        assert messages[0]["role"] == "system"
        turns = [m["role"] for m in messages[1:]]
        assert turns == ["user", "assistant"] * (len(turns) // 2), name
        for answer in messages[2::2]:
            thinking, rest = answer["content"].split("\n</think>\n\n")
            assert thinking.startswith("<think>\n") and rest.strip(), name


def test_voice_file_and_its_errors(tmp_path):
    good = tmp_path / "voice.json"
    good.write_text(json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]))
    assert load_voice(str(good))[1] == {"role": "assistant", "content": "hello"}
    assert load_voice("") == []
    with pytest.raises(ValueError, match="neither a built-in voice"):
        load_voice(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        load_voice(str(bad))
    bad.write_text(json.dumps([{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]))
    with pytest.raises(ValueError, match="message 1 needs a role"):
        load_voice(str(bad))
    bad.write_text(json.dumps([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]))
    with pytest.raises(ValueError, match="message 1: only the first"):
        load_voice(str(bad))


def test_the_voice_system_message_replaces_the_prompts_own():
    preamble = load_voice("think-steps")
    messages = [{"role": "system", "content": "be brief"}, *PROMPT]
    combined = with_voice(preamble, messages)
    assert [m["role"] for m in combined].count("system") == 1
    assert combined[0] == preamble[0] and combined[-1] == PROMPT[0]
    assert with_voice([], messages) is messages


def test_only_the_voiced_model_sees_the_preamble_and_the_record_keeps_the_plain_prompt(qwen3_tokenizer):
    fmt = Qwen3Format()
    student = Party("student", ScriptedBackend(qwen3_tokenizer, "Okay, so 5.\n</think>\n\nThe answer is 5.",
                                               "student"),
                    fmt, KeywordPredictor(), preamble=load_voice("think-aloud"))
    teacher = Party("teacher", ScriptedBackend(qwen3_tokenizer, "2 + 3 = 5.", "teacher"), fmt, KeywordPredictor())
    engine = Engine(student, teacher)
    ids = engine.prompt_ids(PROMPT)
    student_text = qwen3_tokenizer.decode(ids["student"])
    teacher_text = qwen3_tokenizer.decode(ids["teacher"])
    assert "Mia needs 50 pencils" in student_text and "think out loud" in student_text
    assert "pencils" not in teacher_text and student_text.endswith(teacher_text.split("<|im_start|>user")[-1])
    result = asyncio.run(engine.run("s1", PROMPT))
    assert result.messages == PROMPT


def test_voice_is_a_validated_fingerprinted_option(tmp_path):
    from tessy.settings import ConfigError, validate

    plain, voiced = SynthesizeConfig(), SynthesizeConfig()
    voiced.student.voice = "think-aloud"
    assert "voice" not in plain.data_fields()["student"]  # runs made before voices keep their fingerprint
    assert voiced.data_fields()["student"]["voice"] == "think-aloud"
    validate(voiced)
    wrong = SynthesizeConfig()
    wrong.student.voice = 3
    with pytest.raises(ConfigError, match="voice"):
        validate(wrong)


def test_a_voiced_model_is_told_the_prefix_all_its_prompts_share(qwen3_tokenizer):
    fmt = Qwen3Format()
    shared: dict[str, list] = {"student": [], "teacher": []}
    parties = {}
    for role, voice in (("student", "think-aloud"), ("teacher", "")):
        backend = ScriptedBackend(qwen3_tokenizer, "5.", role)
        backend.share_prefix = shared[role].append
        parties[role] = Party(role, backend, fmt, KeywordPredictor(), preamble=load_voice(voice))
    engine = Engine(parties["student"], parties["teacher"])
    assert shared["teacher"] == [] and len(shared["student"]) == 1
    prefix = shared["student"][0]
    assert "Mia needs 50 pencils" in qwen3_tokenizer.decode(prefix)
    for prompt in (PROMPT, [{"role": "user", "content": "Write a haiku."}]):
        ids = engine.prompt_ids(prompt)["student"]
        assert ids[: len(prefix)] == prefix and len(ids) > len(prefix)
