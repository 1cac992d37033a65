"""Typed configuration: dataclasses whose fields carry their own help text.

The same classes serve the YAML config file and the command line (TRL's pattern): every field
becomes a flag (`--max-tokens`, nested as `--teacher.model`), a YAML file gives defaults, and
flags given on the command line override the file. `config_from_sources` does the merge and
names the offending key or flag when a value is wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessy.models import STUDENT_DEMO, TEACHER_DEMO


def option(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with help text (shown by `--help` and in docs)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


class JsonMapping(dict):
    """A mapping setting: a YAML mapping in the config file, a JSON object on the command line."""

    def __init__(self, value: Any = (), /, **kwargs: Any):
        if isinstance(value, str):
            import json

            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON object: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError("expected a JSON object")
        super().__init__(value, **kwargs)


#: ModelConfig fields that say where and how fast a model is reached, not what it writes.
TRANSPORT_FIELDS = ("url", "api_key", "api_key_env", "headers", "max_in_flight", "timeout_s", "max_retries")


@dataclass
class ModelConfig:
    """One side of the collaboration: a model, how it is served, how its spans are cut."""

    model: str = option("", "Model: a demo alias (smollm2-135m-instruct, gemma3-270m), a local folder, or a hub name.")
    format: str = option("auto", "Chat format: auto, qwen3, deepseek-r1, harmony or plain.")
    backend: str = option("hf", "Backend: hf (in-process transformers) or openai (an OpenAI-compatible server: "
                                "vLLM, SGLang, llama.cpp; see the url, served_model_name and tokenizer options).")
    device: str = option("auto", "Device for the hf backend: auto, cpu or cuda.")
    predictor: str = option("lexicon", "Boundary predictor: 'lexicon' or a token-classification checkpoint folder.")
    k: int = option(20, "Tokens generated per step before the predictor cuts (the paper's k).")
    temperature: float = option(0.7, "Sampling temperature (0 = greedy).")
    top_p: float = option(0.95, "Nucleus sampling threshold.")
    top_k: int = option(0, "Top-k sampling (0 = off).")
    max_context: int = option(0, "Context limit in this model's tokens (0 = from the model config).")
    max_batch: int = option(8, "Most sequences one forward pass decodes together (hf backend).")
    # The openai backend (tessy.backends.openai_http): a model behind /v1/completions.
    url: str = option("", "openai backend: server base URL; several comma-separated URLs are replicas.")
    served_model_name: str = option("", "openai backend: model name sent to the server (empty = the one it serves).")
    tokenizer: str = option("", "openai backend: local tokenizer (folder, cached hub name or demo alias; empty = model).")
    prompt_mode: str = option("auto", "openai backend: auto, token_ids (vLLM, SGLang) or text (llama.cpp).")
    api_key_env: str = option("", "openai backend: environment variable holding the API key (never written anywhere).")
    api_key: str = option("", "openai backend: API key given literally (prefer api_key_env; redacted from run.json).")
    headers: JsonMapping = option({}, "openai backend: extra HTTP headers (a YAML mapping or a JSON object).")
    extra_body: JsonMapping = option({}, "openai backend: extra fields merged into every request body (e.g. min_p).")
    max_in_flight: int = option(256, "openai backend: most requests of this role in flight at once (all replicas).")
    timeout_s: float = option(600.0, "openai backend: seconds before a request times out (it is then retried).")
    max_retries: int = option(5, "openai backend: retries per request on timeouts, connection errors, 429 and 5xx.")


@dataclass
class SynthesizeConfig:
    """`tessy synthesize`: prompts in, cooperative records out."""

    input: str = option("", "Prompts: a JSONL or Parquet file, or a local Hugging Face dataset folder.")
    output: str = option("runs/tessy", "Output folder (records.jsonl, failures.jsonl, rejects.jsonl, run.json).")
    method: str = option("tessy", "Data method: tessy, teacher-only, student-only, teacher-think, teacher-answer, "
                                  "teacher-mix, teacher-score or teacher-reference.")
    candidates: int = option(5, "teacher-score: student candidates per prompt; the teacher scores each, the best is kept.")
    prompt_field: str = option("prompt", "Input field holding the prompt text.")
    messages_field: str = option("messages", "Input field holding a chat messages list (used when present).")
    id_field: str = option("id", "Input field holding a sample id (a hash of the prompt when absent).")
    system_prompt: str = option("", "System message prepended to every prompt (empty = none).")
    limit: int = option(0, "Use only the first N prompts (0 = all).")
    concurrency: int = option(8, "Samples in flight at once.")
    max_tokens: int = option(2048, "Most response tokens per sample (student tokenizer), thinking and answer.")
    max_answer_tokens: int = option(512, "Most tokens of the final answer (student's own tokens).")
    max_spans: int = option(400, "Most spans per sample before it ends with reason max_spans.")
    max_attempts: int = option(3, "Attempts per sample across runs before it stays in failures.")
    seed: int = option(0, "Base seed; each sample's sampling seed derives from it and the sample id.")
    overwrite: bool = option(False, "Start the output folder afresh even if it holds another config's run.")
    progress: bool = option(True, "Show a progress bar.")
    teacher: ModelConfig = field(
        default_factory=lambda: ModelConfig(model=TEACHER_DEMO),
        metadata={"help": "The teacher: writes the capability (reasoning) spans."},
    )
    student: ModelConfig = field(
        default_factory=lambda: ModelConfig(model=STUDENT_DEMO),
        metadata={"help": "The student: writes the style spans and the final answer."},
    )

    def data_fields(self) -> dict[str, Any]:
        """The fields that shape the data (fingerprinted); paths and speed knobs are left out."""
        shaping = dataclasses.asdict(self)
        for key in ("input", "output", "limit", "concurrency", "overwrite", "progress", "max_attempts"):
            shaping.pop(key)
        if self.method != "teacher-score":
            shaping.pop("candidates")  # only teacher-score reads it; other runs keep their fingerprint
        for role in ("teacher", "student"):
            for key in ("device", "max_batch", "backend", *TRANSPORT_FIELDS):
                shaping[role].pop(key)
            for key, default in (("served_model_name", ""), ("tokenizer", ""), ("prompt_mode", "auto"),
                                 ("extra_body", {})):
                if shaping[role][key] == default:  # unset openai settings leave fingerprints as they were
                    shaping[role].pop(key)
        return shaping


class ConfigError(ValueError):
    """A config file or flag has a bad key or value."""


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    return typing.get_type_hints(cls)[f.name]


def _is_nested(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """Add one flag per field of `cls` (recursively for nested configs). Defaults are left unset
    so that only flags actually given override the YAML file."""
    for f in dataclasses.fields(cls):
        tp = _field_type(cls, f)
        name = f"{prefix}{f.name}"
        if _is_nested(tp):
            add_dataclass_arguments(parser, tp, prefix=f"{name}.")
            continue
        flag = "--" + name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        if tp is bool:
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=tp, default=None, help=help_text, metavar=tp.__name__.upper())


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    cls = type(obj)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        attr = key.replace("-", "_")
        if attr not in fields:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(fields))}")
        tp = _field_type(cls, fields[attr])
        if _is_nested(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be a mapping of {tp.__name__} fields")
            _apply(getattr(obj, attr), value, f"{where}.{key}")
            continue
        setattr(obj, attr, _coerce(value, tp, f"{where}.{key}"))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    if isinstance(tp, types.UnionType) or value is None:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp in (int, float, str):
        if tp is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def config_from_sources(cls: type, yaml_path: str | None = None, flags: dict[str, Any] | None = None) -> Any:
    """Defaults, then the YAML file, then flags given on the command line (dotted names)."""
    config = cls()
    if yaml_path:
        import yaml

        path = Path(yaml_path)
        if not path.exists():
            raise ConfigError(f"config file {yaml_path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{yaml_path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{yaml_path}: the top level must be a mapping of settings")
        _apply(config, data, yaml_path)
    nested: dict[str, Any] = {}
    for dotted, value in (flags or {}).items():
        if value is None:
            continue
        target = nested
        *parents, leaf = dotted.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    _apply(config, nested, "command line")
    return config
