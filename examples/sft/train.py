"""Fine-tune the student on a tessy export with TRL's SFTTrainer (runs on CPU).

    python examples/sft/train.py --data runs/export --output runs/sft-student            # full fine-tune
    python examples/sft/train.py --data runs/export --output runs/sft-lora --lora        # LoRA via peft

What it does, and promises:

- reads an export of any tessy format (`messages` JSONL, Parquet, a `datasets` folder, or the
  LLaMA-Factory ShareGPT folder) with its ``train`` and, when present, ``validation`` split;
- turns every row into TRL's conversational prompt-completion form (the prompt turns, then the
  assistant response), so SFTTrainer renders both with the STUDENT's OWN chat template and
  computes the loss on the assistant turn only (``completion_only_loss``: prompt tokens are
  labelled -100; the response and its end-of-turn marker are learned);
- loads the student by name, folder, or tessy demo alias (``smollm2-135m-instruct``, resolved
  offline by `tessy.models.resolve_model`), in float32 on CPU unless ``--device cuda``;
- full fine-tune by default, LoRA with ``--lora`` (peft; the adapter is merged before saving),
  so the output folder is always a plain transformers model + tokenizer that any tool loads;
- writes ``OUTPUT/metrics.json``: the settings, the training loss per logging step, and the
  validation loss before and after training when there is a validation split.

`train(RecipeConfig(...))` does the same from Python and returns the metrics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class RecipeConfig:
    data: str = field(metadata={"help": "Export folder written by `tessy export` (any format)."})
    output: str = field(metadata={"help": "Folder for the fine-tuned model, tokenizer and metrics.json."})
    model: str = field(default="smollm2-135m-instruct",
                       metadata={"help": "Student: a model folder, hub name, or tessy demo alias."})
    max_steps: int = field(default=-1, metadata={"help": "Optimizer steps (-1: run --epochs)."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the train split when --max-steps is -1."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak learning rate (LoRA wants ~1e-4)."})
    batch_size: int = field(default=4, metadata={"help": "Sequences per device step."})
    grad_accum: int = field(default=1, metadata={"help": "Steps accumulated per optimizer step."})
    max_length: int = field(default=1024, metadata={"help": "Longest training sequence in tokens (prompt + response)."})
    warmup: float = field(default=0.0, metadata={"help": "Warm-up: steps (>= 1) or a share of all steps (< 1)."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass: less memory, about a third slower."})
    lora: bool = field(default=False, metadata={"help": "Train a LoRA adapter (peft) instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    seed: int = field(default=0, metadata={"help": "Seed for shuffling, dropout and initialisation."})
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N steps."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    limit: int = field(default=0, metadata={"help": "Use only the first N train rows (0: all)."})
    voice: str = field(default="", metadata={
        "help": "The student's voice (tessy.voices: a built-in name or a JSON file) put before every prompt, "
                "as when it wrote data and when it is evaluated; the loss stays on the response only."})
    save_steps: int = field(default=0, metadata={
        "help": "Save a checkpoint every N optimizer steps (0: none); a rerun with the same OUTPUT goes on "
                "from the last one."})


# ---------------------------------------------------------------------------- data


def _sharegpt_to_messages(row: dict) -> list[dict]:
    roles = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant", "system": "system"}
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return messages + [{"role": roles[t["from"]], "content": t["value"]} for t in row["conversations"]]


def load_export(folder: str | Path):
    """The export's splits as a DatasetDict with a ``messages`` column, whatever the format (or,
    for a prompt-completion export, its ``prompt`` and ``completion`` strings as they are)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    folder = Path(folder)
    if (folder / "dataset_dict.json").exists():
        data = load_from_disk(str(folder))
    else:
        for suffix, builder in ((".parquet", "parquet"), (".jsonl", "json")):
            files = {p.stem: str(p) for p in sorted(folder.glob(f"*{suffix}")) if p.stem in ("train", "validation")}
            if files:
                data = load_dataset(builder, data_files=files)
                break
        else:
            raise FileNotFoundError(f"{folder} holds no tessy export (train.jsonl, train.parquet or dataset_dict.json)")
    if "train" not in data:
        raise ValueError(f"{folder} has no train split")
    if "conversations" in data["train"].column_names:
        data = DatasetDict({k: v.map(lambda row: {"messages": _sharegpt_to_messages(row)}) for k, v in data.items()})
    return data


def to_prompt_completion(dataset, voice: str = ""):
    """Conversational prompt-completion rows: loss on the assistant turn only (the voice's
    preamble, if any, goes in front of the prompt turns). A prompt-completion export (`tessy export
    --layout prompt-completion`, for templates that drop thinking from history) is taken as it is:
    its prompts are rendered already."""
    from tessy.voices import load_voice, with_voice

    if "messages" not in dataset.column_names:
        if voice:
            raise ValueError("a prompt-completion export holds rendered prompts: a voice cannot be put in front "
                             "of them (export the messages layout, or train without --voice)")
        return dataset.select_columns(["prompt", "completion"])
    preamble = load_voice(voice)

    def convert(row):
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"row {row.get('id')!r} does not end with an assistant turn")
        return {"prompt": with_voice(preamble, messages[:-1]), "completion": messages[-1:]}

    return dataset.map(convert, remove_columns=dataset.column_names)


# ---------------------------------------------------------------------------- training


def build_trainer(config: RecipeConfig, train_rows=None, eval_rows=None):
    """An SFTTrainer for `config` (data from `config.data` unless rows are given)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tessy.models import resolve_model

    if train_rows is None:
        data = load_export(config.data)
        train_rows = data["train"]
        eval_rows = data.get("validation")
        if config.limit:
            train_rows = train_rows.select(range(min(config.limit, len(train_rows))))
    path = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ValueError(f"{config.model} has no chat template; the recipe trains with the student's own template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    peft_config = None
    if config.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                 target_modules="all-linear", task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(Path(config.output) / "checkpoints"), max_steps=config.max_steps,
        num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, max_length=config.max_length,
        warmup_steps=config.warmup, completion_only_loss=True, packing=False, seed=config.seed,
        logging_steps=config.logging_steps, eval_strategy="no", report_to="none",
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_only_model=False,
        use_cpu=config.device == "cpu", bf16=False, fp16=False, dataloader_num_workers=0,
        gradient_checkpointing=config.gradient_checkpointing, disable_tqdm=True)
    return SFTTrainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=to_prompt_completion(train_rows, config.voice),
                      eval_dataset=(to_prompt_completion(eval_rows, config.voice)
                                    if eval_rows is not None and len(eval_rows) else None),
                      peft_config=peft_config)


def train(config: RecipeConfig, train_rows=None, eval_rows=None) -> dict[str, Any]:
    output = Path(config.output)
    trainer = build_trainer(config, train_rows, eval_rows)
    metrics: dict[str, Any] = {"config": asdict(config), "train_rows": len(trainer.train_dataset),
                               "eval_rows": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0}
    if trainer.eval_dataset is not None:
        metrics["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    started = time.monotonic()
    checkpoints = output / "checkpoints"
    resume = config.save_steps > 0 and any(checkpoints.glob("checkpoint-*"))
    result = trainer.train(resume_from_checkpoint=True if resume else None)
    metrics["resumed"] = resume
    metrics["train_seconds"] = round(time.monotonic() - started, 1)
    metrics["steps"] = result.global_step
    metrics["train_loss"] = result.training_loss
    metrics["log"] = [{k: v for k, v in entry.items() if k in ("step", "loss", "learning_rate", "epoch")}
                      for entry in trainer.state.log_history if "loss" in entry]
    if trainer.eval_dataset is not None:
        metrics["eval_loss_after"] = trainer.evaluate()["eval_loss"]
    model = trainer.model
    if config.lora:
        model = model.merge_and_unload()
    model.save_pretrained(output)
    trainer.processing_class.save_pretrained(output)
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def parse_args(argv: list[str] | None = None) -> RecipeConfig:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(RecipeConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool" or isinstance(f.default, bool):
            parser.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            required = f.default is MISSING
            parser.add_argument(flag, type=kind, required=required,
                                default=None if required else f.default,
                                help=f.metadata["help"] + ("" if required else f" (default: {f.default})"))
    return RecipeConfig(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    metrics = train(config)
    before, after = metrics.get("eval_loss_before"), metrics.get("eval_loss_after")
    print(f"trained {metrics['steps']} steps on {metrics['train_rows']} rows in {metrics['train_seconds']} s; "
          f"train loss {metrics['train_loss']:.4f}"
          + (f"; validation loss {before:.4f} -> {after:.4f}" if before is not None else "")
          + f"; model in {config.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
