"""Typed config: YAML gives defaults, flags override, bad keys and values are named."""

from __future__ import annotations

import pytest

from tessy.cli.main import build_parser
from tessy.cli.synthesize import config_from_args
from tessy.config import ModelConfig, SynthesizeConfig
from tessy.settings import ConfigError, config_from_sources


def parse(argv):
    return config_from_args(build_parser().parse_args(["synthesize", *argv]))


def test_flags_override_yaml(tmp_path):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("input: a.jsonl\nmax_tokens: 100\nteacher:\n  k: 8\n  model: /m/teacher\n")
    config = parse(["--config", str(yaml_path), "--max-tokens", "64", "--student.k", "5", "--no-progress"])
    assert config.input == "a.jsonl"
    assert config.max_tokens == 64  # flag wins
    assert config.teacher.k == 8 and config.teacher.model == "/m/teacher"  # from the file
    assert config.student.k == 5 and config.progress is False
    assert config.student.model == "smollm2-135m-instruct"  # default untouched


def test_unknown_key_and_bad_value_are_named(tmp_path):
    yaml_path = tmp_path / "bad.yaml"
    yaml_path.write_text("teacher:\n  kk: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.teacher: unknown key 'kk'"):
        config_from_sources(SynthesizeConfig, str(yaml_path))
    yaml_path.write_text("max_tokens: lots\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: max_tokens: expected an integer at least 1, got 'lots'"):
        config_from_sources(SynthesizeConfig, str(yaml_path))


def test_fingerprint_fields_leave_out_paths_and_speed():
    a, b = SynthesizeConfig(output="x", concurrency=1), SynthesizeConfig(output="y", concurrency=64)
    assert a.data_fields() == b.data_fields()
    assert SynthesizeConfig(max_tokens=5).data_fields() != a.data_fields()


#: Fingerprints computed by the code before `shapes_data` (the hand-kept lists of excluded
#: fields): runs resume by them, so deriving the fields from metadata must not move them.
PINNED_FINGERPRINTS = {
    "default": "2ec13475aae7f949",
    "score": "a8a97c62bb2e82f3",
    "openai": "ff00dd33ef1a6d56",
    "mix": "b439286e73633dee",
}


def pinned_configs() -> dict[str, SynthesizeConfig]:
    return {
        "default": SynthesizeConfig(),
        "score": SynthesizeConfig(method="teacher-score", candidates=3, max_tokens=1024, seed=7),
        "openai": SynthesizeConfig(
            input="p.jsonl", output="o", limit=5, concurrency=64, shard="1/4", journal_sync_s=0,
            teacher=ModelConfig(model="gpt-oss-120b", backend="openai", url="http://a:8000,http://b:8000",
                                served_model_name="gpt-oss", tokenizer="openai/gpt-oss-120b",
                                prompt_mode="token_ids", api_key="secret", headers={"X": "y"},
                                extra_body={"min_p": 0.1}, max_in_flight=32, timeout_s=30.0, max_retries=2,
                                stream="on", slots=4, k=16, temperature=1.0),
            student=ModelConfig(model="Qwen/Qwen3-8B", device="cuda", max_batch=2, adaptive_k=False,
                                predictor="ckpt/student", predictor_cache_mb=0.0, voice="think-aloud", top_k=20,
                                max_context=8192, format="qwen3")),
        "mix": SynthesizeConfig(method="teacher-mix", system_prompt="Be brief.", max_answer_tokens=64, max_spans=9,
                                prompt_field="q", messages_field="m", id_field="uid", overwrite=True,
                                progress=False),
    }


@pytest.mark.parametrize("name", sorted(PINNED_FINGERPRINTS))
def test_fingerprints_of_existing_configs_stay_the_same(name):
    from tessy.store import config_fingerprint

    assert config_fingerprint(pinned_configs()[name].data_fields()) == PINNED_FINGERPRINTS[name]


def test_every_flag_has_help():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["synthesize"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and not action.help.startswith(" (default"), action.dest


# ---------------------------------------------------------------------------- validation at the door

from tessy.config import (BACKEND_CHOICES, FORMAT_ALIASES, FORMAT_CHOICES, METHOD_CHOICES,  # noqa: E402
                          PROMPT_MODE_CHOICES, ModelConfig)
from tessy.predictor_training.config import AnnotateConfig, EvalConfig, SampleConfig, TrainConfig  # noqa: E402
from tessy.settings import describe_bounds, validate  # noqa: E402


def test_choices_are_read_from_the_registries():
    from tessy.backends.openai import PROMPT_MODES
    from tessy.formats import ALIASES, CHOICES
    from tessy.methods import METHODS

    assert set(FORMAT_CHOICES) == set(CHOICES) and set(FORMAT_ALIASES) == set(ALIASES)
    assert FORMAT_CHOICES == ("auto", "qwen3", "deepseek-r1", "harmony", "plain")  # the order --help shows
    assert METHOD_CHOICES == METHODS
    assert PROMPT_MODE_CHOICES == PROMPT_MODES
    assert BACKEND_CHOICES == ("hf", "openai")


def test_defaults_of_every_config_are_valid():
    for cls in (SynthesizeConfig, ModelConfig, SampleConfig, AnnotateConfig, TrainConfig, EvalConfig):
        validate(cls())


@pytest.mark.parametrize("yaml_text, message", [
    ("concurrency: 0\n", r"run.yaml: concurrency: expected an integer at least 1, got 0"),
    ("student:\n  k: null\n", r"run.yaml: student.k: expected an integer at least 1, got null"),
    ("teacher:\n  k: 2.7\n", r"teacher.k: expected an integer at least 1, got 2.7"),
    ("teacher:\n  temperature: true\n", r"teacher.temperature: expected a number at least 0, got true"),
    ("teacher:\n  temperature: .nan\n", r"teacher.temperature: expected a finite number, got nan"),
    ("student:\n  top_p: 0\n", r"student.top_p: expected a number greater than 0 and at most 1, got 0"),
    ("teacher:\n  headers: 'X: y'\n", r"teacher.headers: expected a mapping"),
    ("teacher:\n  headers: {X-Key: 5}\n", r"teacher.headers: the value of 'X-Key' must be a string, got 5"),
    ("system_prompt: null\n", r"system_prompt: expected a string, got null"),
    ("progress: 'yes'\n", r"progress: expected true or false, got 'yes'"),
    ("method: Tessy\n", r"method: expected one of: tessy, .*; got 'Tessy'"),
    ("prompt_field: ''\n", r"prompt_field: must not be empty"),
    ("teacher: 3\n", r"run.yaml: 'teacher' must be a mapping of ModelConfig settings, got 3"),
    ("teacher:\n  backend: openai\n  url: localhost:8000\n", r"teacher.url: expected http:// or https:// URLs"),
])
def test_bad_yaml_values_are_named_with_their_range(tmp_path, yaml_text, message):
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message):
        config_from_sources(SynthesizeConfig, str(path))


def test_good_values_are_kept_and_converted(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teacher:\n  temperature: 1\n  format: R1\n  k: 8.0\n  headers: {X-Trace: abc}\n"
                    "student:\n  format: gpt-oss\n")
    config = config_from_sources(SynthesizeConfig, str(path), {"student.headers": '{"A": "b"}'})
    assert config.teacher.temperature == 1.0 and isinstance(config.teacher.temperature, float)
    assert config.teacher.k == 8 and isinstance(config.teacher.k, int)
    assert config.teacher.format == "R1"  # kept as written: the fingerprint of existing runs holds
    assert config.student.headers == {"A": "b"}
    with pytest.raises(ConfigError, match=r"--student.headers: expected a mapping"):
        config_from_sources(SynthesizeConfig, None, {"student.headers": "not json"})


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as info:
        config_from_sources(SynthesizeConfig, None, {"concurrency": 0, "teacher.k": 0, "limit": -1})
    text = str(info.value)
    assert text.startswith("3 bad settings:")
    assert "--concurrency" in text and "--teacher.k" in text and "--limit" in text


def test_python_built_configs_are_checked_too():
    with pytest.raises(ConfigError, match=r"^bad setting: max_spans: expected an integer at least 1, got 0$"):
        validate(SynthesizeConfig(max_spans=0))


def test_pipeline_configs_are_checked():
    with pytest.raises(ConfigError, match=r"--role: expected one of: student, teacher; got 'teachr'"):
        config_from_sources(SampleConfig, None, {"role": "teachr"})
    with pytest.raises(ConfigError, match=r"--min-segment-tokens: must not exceed max_segment_tokens \(50\), got 100"):
        config_from_sources(SampleConfig, None, {"min_segment_tokens": 100, "max_segment_tokens": 50})
    with pytest.raises(ConfigError, match=r"test_fraction \+ dev_fraction must be below 1"):
        config_from_sources(TrainConfig, None, {"test_fraction": 0.6, "dev_fraction": 0.5})
    with pytest.raises(ConfigError, match=r"--split: expected one of: test, dev, train, all"):
        config_from_sources(EvalConfig, None, {"split": "validation"})
    assert config_from_sources(AnnotateConfig, None, {"annotator": "openai"}).annotator == "openai"  # old name


def test_bounds_in_words():
    assert describe_bounds({"min": 1}) == "at least 1"
    assert describe_bounds({"gt": 0, "max": 1}) == "greater than 0 and at most 1"
    assert describe_bounds({"min": 0, "max": 1}) == "from 0 to 1"
    assert describe_bounds({"choices": ("a", "b")}) == "one of: a, b"
    assert describe_bounds({"help": "x"}) == ""


def test_every_bounded_flag_shows_its_bounds_in_help():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["synthesize"]
    helps = {action.dest: action.help for action in sub._actions}
    assert helps["concurrency"].endswith("(default: 8; at least 1)")
    assert helps["teacher.top_p"].endswith("(default: 0.95; greater than 0 and at most 1)")
    assert "one of: hf, openai" in helps["student.backend"]


def test_help_imports_no_heavy_library():
    """The choice lists come from the registries; reading them must not load torch,
    transformers or httpx, so `tessy --help` stays fast."""
    import subprocess
    import sys

    heavy = "('torch', 'transformers', 'httpx', 'aiohttp')"
    code = f"import sys, tessy.cli.main; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
