"""docs/cli.md is the `--help` of every tessy command and subcommand, regenerated here and compared."""

from __future__ import annotations

from pathlib import Path

from tessy.cli import reference

ROOT = Path(__file__).parent.parent


def test_committed_cli_reference_is_current():
    committed = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == reference.render(), (
        f"docs/cli.md differs from the commands' --help: run `{reference.REGENERATE}` and commit docs/cli.md")


def test_reference_covers_every_command_and_subcommand():
    from tessy.cli.main import COMMANDS
    from tessy.cli.predictor import STEPS

    text = reference.render()
    for name in COMMANDS:
        assert f"## `tessy {name}`" in text
    for step in STEPS:
        assert f"## `tessy predictor {step}`" in text


def test_reference_does_not_depend_on_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    narrow = reference.render()
    monkeypatch.setenv("COLUMNS", "250")
    assert reference.render() == narrow
