"""Trainer configs written next to an export (`tessy export --trainer-configs`).

Owns the files that let a user train the student on the export without writing a config:

- ``trl_sft.yaml``: the SFT recipe's config (``python examples/sft/train.py --config OUT/trl_sft.yaml``:
  TRL's `TrlParser` over the recipe's arguments and `trl.SFTConfig`); any export format and layout;
- ``llamafactory_sft.yaml`` (``llamafactory-cli train OUT/llamafactory_sft.yaml``) with the
  ``dataset_info.json`` that registers ``<name>_train`` / ``<name>_validation`` (the ShareGPT
  export writes its own, which is kept); the ``template`` is the student format's LLaMA-Factory name
  (`LLAMA_FACTORY_TEMPLATES`), or none, so that LLaMA-Factory parses the student tokenizer's own;
- ``xtuner_sft.py``: an XTuner v1 config (``xtuner/v1/train/cli/sft.py --config OUT/xtuner_sft.py``,
  a Python file whose ``trainer`` is a ``TrainerConfig``), chat template from `XTUNER_TEMPLATES`.

Promises:

- lengths come from the data: `fit_length` of the longest kept row, counted in student tokens
  under the student's chat template (`tessy.export.template.rendered_length`) and as the raw text
  a trainer's own template renders (`raw_length`), whichever is longer, with ``MARGIN``
  tokens to spare for what a trainer's own template adds (a BOS, a newline after the end of turn),
  rounded up to a multiple of 64. That is TRL's ``max_length``, LLaMA-Factory's ``cutoff_len``
  (its default of 2,048 cuts long traces) and XTuner's ``max_length`` / ``pack_max_length``;
- hyper-parameters are the paper's preset (`PAPER`: 9 epochs, global batch 128, learning rate
  5e-5); a trainer with no global-batch setting gets per-device batch 1 and gradient accumulation
  ``128 / gpus`` (``gpus`` defaults to 8; the YAML says how to change it); the schedule is cosine
  with 3% warm-up (the defaults of XTuner's command line, the paper's trainer) where the trainer
  can state it;
- paths in the configs are absolute (the export's final folder), the student is the model the
  records name (a tessy demo alias resolved to its folder for LLaMA-Factory and XTuner);
- a trainer that would not read the export as it is laid out gets no config: `write` returns why
  in ``skipped`` (and one note per trainer), e.g. LLaMA-Factory reads the thinking only from
  ``content`` and renders prompts itself, XTuner has no DeepSeek-R1 template and reads only
  ``messages`` JSONL. A config is never written that would train on other text than the export's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: The TESSY paper's training setup (section 3.1: "up to 9 epochs ... batch size of 128 and a
#: learning rate of 5e-5", with XTuner, whose command line defaults to a cosine schedule with 3% warm-up).
PAPER = {"num_train_epochs": 9, "global_batch_size": 128, "learning_rate": 5e-5, "lr_scheduler_type": "cosine",
         "warmup_ratio": 0.03}
MARGIN = 16
LLAMA_FACTORY_TEMPLATES = {"qwen3": "qwen3", "deepseek-r1": "deepseekr1", "harmony": "gpt_oss"}
XTUNER_TEMPLATES = {"qwen3": "qwen3", "harmony": "gpt-oss"}
#: Where each XTuner template reads the thinking: qwen3 from the raw text, gpt-oss from ``thinking``.
XTUNER_REASONING = {"qwen3": "content", "harmony": "thinking"}
FILES = {"trl": "trl_sft.yaml", "llamafactory": "llamafactory_sft.yaml", "xtuner": "xtuner_sft.py"}
OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
               "system_tag": "system"}


def fit_length(longest: int, margin: int = MARGIN, multiple: int = 64) -> int:
    """The sequence length that holds a row of `longest` tokens: plus `margin`, rounded up."""
    if longest < 0 or margin < 0 or multiple < 1:
        raise ValueError(f"fit_length: longest {longest}, margin {margin} and multiple {multiple} must be >= 0 / >= 1")
    return -(-(longest + margin) // multiple) * multiple


def raw_length(tokenizer: Any, fmt: Any, record: dict) -> int:
    """The record's length as a trainer that renders it with its own template counts it: the prompt
    (through the student's format, generation prompt and thinking opener included), the response
    text as written, one end-of-turn token. Counted besides the chat template's rendering because a
    template may drop the thinking (DeepSeek-R1-Distill's) where a trainer's own keeps it."""
    prompt = [{"role": m["role"], "content": m["content"]} for m in record["messages"][:-1]]
    response = record["messages"][-1]["content"]
    opener = fmt.thinking_opener if fmt.has_thinking else ""
    if opener and response.startswith(opener):
        response = response[len(opener):]
    return len(fmt.prompt_ids(tokenizer, prompt)) + len(tokenizer.encode(response, add_special_tokens=False)) + 1


def write(folder: Path, *, data_dir: Path, fmt: str, layout: dict[str, Any], files: list[str], dataset_name: str,
          student_model: str | None, longest: int, gpus: int = 8) -> dict[str, Any]:
    """Write the configs into `folder` (the export being staged; `data_dir` is where it will be).
    `layout` is `tessy.export.layouts.Layout.describe()`; `files` the data files the format wrote;
    `longest` the longest kept row in student tokens. Returns ``{"files", "longest_row_tokens",
    "max_length", "skipped": {trainer: why}, "notes", "preset"}``."""
    if gpus < 1 or PAPER["global_batch_size"] % gpus:
        raise ValueError(f"gpus {gpus} must divide the paper's global batch of {PAPER['global_batch_size']}")
    result: dict[str, Any] = {"files": [], "longest_row_tokens": longest, "max_length": None, "skipped": {},
                              "notes": [], "preset": dict(PAPER)}
    if longest <= 0:
        result["skipped"] = {name: "the export kept no rows" for name in FILES}
        result["notes"].append("no trainer configs written: the export kept no rows")
        return result
    length = fit_length(longest)
    result["max_length"] = length
    model = student_model or "<the student model>"
    output = f"{data_dir}-student"  # each trainer writes its own folder beside the export
    common = {"data_dir": data_dir, "dataset_name": dataset_name, "length": length, "longest": longest,
              "output": output, "gpus": gpus}
    writers = {"trl": lambda: _trl(model=model, **common),
               "llamafactory": lambda: _llamafactory(folder, fmt, layout, files, model=_weights(model), **common),
               "xtuner": lambda: _xtuner(fmt, layout, files, model=_weights(model), **common)}
    for name, make in writers.items():
        made = make()
        if isinstance(made, str):
            result["skipped"][name] = made
            result["notes"].append(f"no {name} config: {made}")
            continue
        for file_name, text in made.items():
            if not (folder / file_name).exists():
                (folder / file_name).write_text(text, encoding="utf-8")
                result["files"].append(file_name)
    if student_model is None:
        result["notes"].append("the records name no student model: set the model in the trainer configs")
    return result


def _weights(model: str) -> str:
    """A folder or hub name the trainers load: a tessy demo alias becomes its converted folder."""
    from tessy.models import DEMO_MODELS, resolve_model

    return resolve_model(model) if model in DEMO_MODELS else model


def _yaml(header: list[str], sections: list[tuple[str, dict[str, Any]]]) -> str:
    import yaml

    lines = [f"# {line}" if line else "#" for line in header]
    for title, values in sections:
        lines.append(f"\n### {title}")
        lines.append(yaml.safe_dump(values, sort_keys=False, allow_unicode=True, width=1000).rstrip("\n"))
    return "\n".join(lines) + "\n"


def _trl(*, model: str, data_dir: Path, length: int, longest: int, output: str, **_: Any) -> dict[str, str]:
    header = ["The SFT recipe (examples/sft/train.py, TRL's SFTTrainer) on this export, at the TESSY paper's size:",
              f"  python examples/sft/train.py --config {data_dir}/{FILES['trl']}",
              "Every key is a recipe argument or a trl.SFTConfig field; command-line flags override them.",
              f"max_length: the longest row is {longest} student tokens (+{MARGIN}, rounded up to 64).",
              "global_batch_size: the recipe sets gradient_accumulation_steps = 128 / (per-device batch x GPUs)."]
    return {FILES["trl"]: _yaml(header, [
        ("recipe", {"data": str(data_dir), "model": model, "global_batch_size": PAPER["global_batch_size"]}),
        ("trl.SFTConfig", {"output_dir": f"{output}-trl", "max_length": length,
                           "num_train_epochs": PAPER["num_train_epochs"], "learning_rate": PAPER["learning_rate"],
                           "lr_scheduler_type": PAPER["lr_scheduler_type"], "warmup_steps": PAPER["warmup_ratio"],
                           "per_device_train_batch_size": 1,
                           "save_steps": 500, "logging_steps": 10})])}


def _llamafactory(folder: Path, fmt: str, layout: dict[str, Any], files: list[str], *, model: str, data_dir: Path,
                  dataset_name: str, length: int, longest: int, output: str, gpus: int,
                  **_: Any) -> dict[str, str] | str:
    if layout.get("layout") != "messages":
        return ("LLaMA-Factory renders the prompt itself with its own template, so it cannot take rendered prompts: "
                "export with --layout messages --reasoning-field content")
    if layout.get("reasoning_field") not in (None, "content"):
        return (f"LLaMA-Factory reads the thinking from the message text, not from {layout['reasoning_field']!r}: "
                "export with --reasoning-field content")
    data = {split: f for f in files for split in ("train", "validation") if f in (f"{split}.jsonl", f"{split}.parquet")}
    if "train" not in data:
        return f"LLaMA-Factory reads JSON/JSONL or Parquet files, not the {fmt} export: use --to messages or parquet"
    info = {}
    if not (folder / "dataset_info.json").exists():  # the ShareGPT export registers its own
        info = {f"{dataset_name}_{split}": {"file_name": name, "formatting": "sharegpt",
                                            "columns": {"messages": "messages"}, "tags": dict(OPENAI_TAGS)}
                for split, name in data.items()}
    template = LLAMA_FACTORY_TEMPLATES.get(layout.get("student_format") or "")
    accumulation = PAPER["global_batch_size"] // gpus
    header = ["LLaMA-Factory full fine-tune of the student on this export, at the TESSY paper's size:",
              f"  llamafactory-cli train {data_dir}/{FILES['llamafactory']}",
              f"cutoff_len: the longest row is {longest} student tokens (+{MARGIN}, rounded up to 64).",
              f"Global batch {PAPER['global_batch_size']} = per_device_train_batch_size 1 x "
              f"gradient_accumulation_steps {accumulation} x {gpus} GPUs: change the accumulation for other counts.",
              "Warm-up is left out (the paper does not state it; transformers 4 names it warmup_ratio, 5 "
              "warmup_steps)."]
    if template is None:
        header.append("template: not set, so LLaMA-Factory parses the student tokenizer's own chat template.")
    dataset = {"dataset_dir": str(data_dir), "dataset": f"{dataset_name}_train"}
    if template:
        dataset["template"] = template
    dataset.update({"cutoff_len": length, "preprocessing_num_workers": 16})
    train = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": accumulation,
             "learning_rate": PAPER["learning_rate"], "num_train_epochs": float(PAPER["num_train_epochs"]),
             "lr_scheduler_type": PAPER["lr_scheduler_type"], "bf16": True}
    sections = [("model", {"model_name_or_path": model}),
                ("method", {"stage": "sft", "do_train": True, "finetuning_type": "full"}),
                ("dataset", dataset),
                ("output", {"output_dir": f"{output}-llamafactory", "logging_steps": 10, "save_steps": 500,
                            "plot_loss": True, "report_to": "none"}),
                ("train", train)]
    if "validation" in data:
        sections.append(("eval", {"eval_dataset": f"{dataset_name}_validation", "per_device_eval_batch_size": 1,
                                  "eval_strategy": "steps", "eval_steps": 500}))
    made = {FILES["llamafactory"]: _yaml(header, sections)}
    if info:
        made["dataset_info.json"] = json.dumps(info, indent=2) + "\n"
    return made


def _xtuner(fmt: str, layout: dict[str, Any], files: list[str], *, model: str, data_dir: Path, dataset_name: str,
            length: int, longest: int, output: str, **_: Any) -> dict[str, str] | str:
    student = layout.get("student_format")
    template = XTUNER_TEMPLATES.get(student or "")
    if template is None:
        return (f"XTuner has no chat template for the {student or 'unnamed'} student format "
                f"(its templates for these students: {', '.join(f'{k} -> {v}' for k, v in XTUNER_TEMPLATES.items())})")
    if fmt != "messages" or layout.get("layout") != "messages" or "train.jsonl" not in files:
        return "XTuner reads messages JSONL: export with --to messages --layout messages"
    wanted = XTUNER_REASONING[student]
    if layout.get("reasoning_field") != wanted:
        return (f"XTuner's {template} template reads the thinking from {wanted!r}, not from "
                f"{layout.get('reasoning_field')!r}: export with --reasoning-field {wanted}")
    text = f'''"""XTuner v1 SFT config: the student on the tessy export in {data_dir}, at the TESSY paper's size.

    torchrun --nproc-per-node 8 xtuner/v1/train/cli/sft.py --config {data_dir}/{FILES["xtuner"]}

Written by `tessy export --trainer-configs`. Paper: {PAPER["num_train_epochs"]} epochs, global batch \
{PAPER["global_batch_size"]}, learning rate {PAPER["learning_rate"]}; cosine schedule with {PAPER["warmup_ratio"]:.0%} \
warm-up (the defaults of XTuner's command line).
max_length: the longest row is {longest} student tokens (+{MARGIN}, rounded up to 64). XTuner packs rows
into sequences of up to pack_max_length tokens, and global_batch_size counts those packs (one long row,
or several short ones). XTuner v1 takes no validation set here.
"""

from pathlib import Path

from xtuner.v1.config import AdamWConfig, LRConfig
from xtuner.v1.datasets.config import DataloaderConfig, DatasetConfig
from xtuner.v1.datasets.sft_tokenize_fn import OpenaiTokenizeFunctionConfig
from xtuner.v1.model import get_model_config_from_hf
from xtuner.v1.train import TrainerConfig

load_from = {json.dumps(model)}  # the student: a local folder of its Hugging Face weights
max_length = {length}

dataset_config_list = [
    {{
        "dataset": DatasetConfig(anno_path={json.dumps(str(data_dir / "train.jsonl"))},
                                 name={json.dumps(dataset_name)}),
        "tokenize_fn": OpenaiTokenizeFunctionConfig(chat_template={json.dumps(template)}, max_length=max_length),
    }},
]

trainer = TrainerConfig(
    model_cfg=get_model_config_from_hf(Path(load_from)),
    load_from=load_from,
    tokenizer_path=load_from,
    dataloader_cfg=DataloaderConfig(dataset_config_list=dataset_config_list, pack_max_length=max_length),
    optim_cfg=AdamWConfig(lr={PAPER["learning_rate"]!r}),
    lr_cfg=LRConfig(lr_type={json.dumps(PAPER["lr_scheduler_type"])}, warmup_ratio={PAPER["warmup_ratio"]!r}),
    global_batch_size={PAPER["global_batch_size"]},
    total_epoch={PAPER["num_train_epochs"]},
    work_dir={json.dumps(output + "-xtuner")},
)
'''
    return {FILES["xtuner"]: text}
