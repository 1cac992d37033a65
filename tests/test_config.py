"""Typed config: YAML gives defaults, flags override, bad keys and values are named."""

from __future__ import annotations

import pytest

from tessy.cli.main import build_parser
from tessy.cli.synthesize import config_from_args
from tessy.config import ConfigError, SynthesizeConfig, config_from_sources


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


def test_every_flag_has_help():
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["synthesize"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and not action.help.startswith(" (default"), action.dest
