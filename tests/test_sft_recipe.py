"""The SFT recipe (examples/sft/train.py) end to end at tiny size: a real tessy export, TRL's SFTTrainer,
loss on the assistant turn only with the student's own chat template, full and LoRA runs; the command
on TRL's own parser (`TrlParser` over the recipe's arguments and `SFTConfig`, YAML through --config,
the recipe.yaml and paper.yaml presets), max_length taken from the data, checkpoints and resume, the
JSONL log. The mechanics run on a tiny randomly initialised model with SmolLM2's real tokenizer and
template (fast); one step on the real SmolLM2-135M-Instruct weights shows the recipe runs on the demo
student itself. `train(RecipeConfig)` (examples/table1.py's entry) keeps its fixed settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tessy.export import export_runs

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [("What is 2 + 3?", "Okay, let me add. 2 + 3 = 5, so the answer is 5."),
         ("What is 4 + 4?", "Okay, let me add. 4 + 4 = 8, so the answer is 8."),
         ("What is 6 + 1?", "Okay, let me add. 6 + 1 = 7, so the answer is 7."),
         ("What is 5 + 3?", "Okay, let me add. 5 + 3 = 8, so the answer is 8.")]


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory, smol_tokenizer):
    """SmolLM2's architecture at toy size, random weights, with the real tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tessy.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model("smollm2-135m-instruct"))
    config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-smollm2")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    return str(folder)


def make_export(tmp_path: Path, to: str = "messages", validation_fraction: float = 0.0) -> Path:
    records = []
    for i, (prompt, answer) in enumerate(PAIRS):
        spans = [{"role": "student", "section": "response", "text": answer[:18], "tokens_student": 5,
                  "tokens_own": 5, "generated": 5, "discarded": 0, "forced": False},
                 {"role": "teacher", "section": "response", "text": answer[18:], "tokens_student": 12,
                  "tokens_own": 12, "generated": 12, "discarded": 0, "forced": False}]
        records.append({"id": f"q{i}", "method": "tessy",
                        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
                        "spans": spans, "totals": {"spans": 2, "tokens_student": 17, "teacher_tokens_student": 12,
                                                   "teacher_share": 12 / 17, "generated": 17, "discarded": 0},
                        "finish_reason": "stop",
                        "models": {"student": {"model": "smollm2-135m-instruct", "format": "plain", "predictor": "lexicon"}},
                        "config_fingerprint": "fp", "tessy_version": "0.1.0"})
    run = tmp_path / "run"
    run.mkdir(parents=True)
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    export_runs([run], tmp_path / f"export-{to}", to=to, validation_fraction=validation_fraction)
    return tmp_path / f"export-{to}"


def test_every_export_format_loads_as_messages(tmp_path, recipe):
    for to in ("messages", "parquet", "hf", "sharegpt"):
        data = recipe.load_export(make_export(tmp_path / to, to))
        rows = sorted(data["train"], key=lambda r: r["id"])
        assert [r["messages"][-1]["content"] for r in rows] == [a for _, a in PAIRS], to
        assert rows[0]["messages"][0] == {"role": "user", "content": PAIRS[0][0]}, to
    with pytest.raises(FileNotFoundError, match="no tessy export"):
        recipe.load_export(tmp_path)


def test_a_prompt_completion_export_is_taken_as_it_is(tmp_path, recipe, smol_tokenizer):
    export_runs([make_export(tmp_path).parent / "run"], tmp_path / "pc", layout="prompt-completion",
                tokenizer=smol_tokenizer)
    rows = recipe.to_prompt_completion(recipe.load_export(tmp_path / "pc")["train"])
    assert rows.column_names == ["prompt", "completion"]
    row = next(r for r in rows if PAIRS[0][0] in r["prompt"])
    assert row["completion"].startswith(PAIRS[0][1]) and PAIRS[0][1] not in row["prompt"]
    with pytest.raises(ValueError, match="rendered prompts"):
        recipe.to_prompt_completion(recipe.load_export(tmp_path / "pc")["train"], voice="think-aloud")


@pytest.mark.slow
def test_recipe_trains_the_student_on_the_assistant_turn_only(tmp_path, recipe, smol_tokenizer, tiny_student):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    export = make_export(tmp_path)
    data = recipe.load_export(export)
    config = recipe.RecipeConfig(data=str(export), output=str(tmp_path / "full"), model=tiny_student, max_steps=4,
                                 batch_size=2, learning_rate=3e-3, max_length=256, logging_steps=1)
    trainer = recipe.build_trainer(config, data["train"], data["train"])
    # Loss on the assistant turn only, rendered with the student's own chat template.
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    learned = [t for t, l in zip(ids, labels) if l != -100]
    first = labels.index(next(l for l in labels if l != -100))
    assert all(l == -100 for l in labels[:first]) and all(l != -100 for l in labels[first:])
    source = next(r for r in data["train"] if r["messages"][-1]["content"] in smol_tokenizer.decode(ids))
    prompt_text = smol_tokenizer.apply_chat_template(source["messages"][:-1], tokenize=False, add_generation_prompt=True)
    assert smol_tokenizer.decode(ids[:first]) == prompt_text
    assert smol_tokenizer.decode(learned).startswith(source["messages"][-1]["content"] + "<|im_end|>")

    metrics = recipe.train(config, data["train"], data["train"])
    assert metrics["steps"] == 4 and len(metrics["log"]) == 4
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"] - 0.1, metrics
    saved = json.loads((tmp_path / "full" / "metrics.json").read_text())
    assert saved["eval_loss_after"] == metrics["eval_loss_after"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full")
    assert tokenizer.chat_template == smol_tokenizer.chat_template
    assert model.config.vocab_size == len(smol_tokenizer)
    assert not (tmp_path / "full" / "checkpoints").exists()


def test_the_command_parses_with_trls_parser_and_config(tmp_path, recipe):
    """Every trl.SFTConfig flag by its own name, YAML through --config, flags over the file; the
    recipe's defaults: max_length from the data (unset), bf16 only where the hardware has it."""
    from trl import SFTConfig

    args_recipe, args = recipe.parse(["--data", "runs/x", "--output_dir", str(tmp_path / "o"), "--num_train_epochs", "2",
                                      "--weight_decay", "0.1", "--lr_scheduler_type", "cosine", "--use_cpu", "true"])
    assert isinstance(args, SFTConfig) and args_recipe.data == "runs/x" and args_recipe.model == recipe.STUDENT
    assert (args.num_train_epochs, args.weight_decay, args.lr_scheduler_type.value) == (2, 0.1, "cosine")
    assert args.max_length is None and args.bf16 is False  # use_cpu: never bf16
    assert args.bf16 is recipe.bf16_available(use_cpu=True) is False
    config = tmp_path / "c.yaml"
    config.write_text(f"data: runs/y\noutput_dir: {tmp_path / 'o'}\nlearning_rate: 3.0e-4\nlora: true\n"
                      "max_length: 300\nenv:\n  TESSY_RECIPE_TEST: '1'\n")
    args_recipe, args = recipe.parse(["--config", str(config), "--learning_rate", "1e-4"])
    assert (args_recipe.data, args_recipe.lora, args.learning_rate, args.max_length) == ("runs/y", True, 1e-4, 300)
    assert recipe.main(["--data", "runs/x"]) == 2  # no --output_dir: a one-line error naming it
    # The recipe's earlier flags still parse, to the SFTConfig fields they always meant.
    _, args = recipe.parse(["--data", "d", "--output", str(tmp_path / "o"), "--max-steps", "8", "--batch-size", "8",
                            "--epochs", "2", "--grad-accum", "2", "--warmup", "0.1", "--max-length", "256"])
    assert (args.output_dir, args.max_steps, args.per_device_train_batch_size, args.num_train_epochs,
            args.gradient_accumulation_steps, args.warmup_steps, args.max_length) == \
        (str(tmp_path / "o"), 8, 8, 2.0, 2, 0.1, 256)


def test_recipe_yaml_and_the_paper_preset(tmp_path, recipe):
    """examples/sft/recipe.yaml and paper.yaml load through the recipe's parser; paper.yaml is the
    preset `tessy export --trainer-configs` writes (tessy.export.trainers.PAPER)."""
    from tessy.export.trainers import PAPER

    sft = ROOT / "examples" / "sft"
    args_recipe, args = recipe.parse(["--config", str(sft / "recipe.yaml"), "--use_cpu", "true"])
    assert args_recipe.model == recipe.STUDENT and args.max_length is None and not args.gradient_checkpointing
    assert args.save_steps > 0 and not args.bf16
    args_recipe, args = recipe.parse(["--config", str(sft / "paper.yaml"), "--data", "d", "--output_dir",
                                      str(tmp_path / "o"), "--use_cpu", "true"])
    assert (args.num_train_epochs, args_recipe.global_batch_size, args.learning_rate, args.lr_scheduler_type.value,
            args.warmup_steps) == (PAPER["num_train_epochs"], PAPER["global_batch_size"], PAPER["learning_rate"],
                                   PAPER["lr_scheduler_type"], PAPER["warmup_ratio"])
    assert args.max_length is None  # from the data
    assert recipe._accumulation(128, 1) == 128 and recipe._accumulation(128, 4) == 32
    with pytest.raises(ValueError, match="--global_batch_size 128 is not a multiple of per_device_train_batch_size 3"):
        recipe._accumulation(128, 3)


@pytest.mark.slow
def test_recipe_cli_with_lora_takes_max_length_from_the_data(tmp_path, recipe, capsys, tiny_student, smol_tokenizer):
    from transformers import AutoModelForCausalLM

    export = make_export(tmp_path, validation_fraction=0.5)
    out = tmp_path / "lora"
    code = recipe.main(["--data", str(export), "--output_dir", str(out), "--model", tiny_student, "--lora", "true",
                        "--max_steps", "2", "--per_device_train_batch_size", "2", "--learning_rate", "1e-3",
                        "--logging_steps", "1", "--gradient_checkpointing", "false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "trained 2 steps" in printed and "validation loss" in printed and "fp32" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["recipe"]["lora"] and metrics["train_rows"] + metrics["eval_rows"] == 4 and metrics["eval_rows"] >= 1
    # The longest row as the student's template renders it, rounded up to 64; nothing cut.
    data = recipe.load_export(export)
    rendered = [smol_tokenizer.apply_chat_template(r["messages"], tokenize=False)
                for part in data.values() for r in part]
    longest = max(len(smol_tokenizer(text, add_special_tokens=False)["input_ids"]) for text in rendered)
    assert metrics["longest_row_tokens"] == longest and metrics["max_length_from"] == "data"
    assert metrics["max_length"] == -(-longest // 64) * 64 and metrics["rows_cut"] == 0
    assert metrics["bf16"] is False and metrics["sft"]["max_length"] == metrics["max_length"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2]
    model = AutoModelForCausalLM.from_pretrained(out)  # merged: a plain model, no adapter files
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert not (out / "adapter_config.json").exists()


@pytest.mark.slow
def test_recipe_saves_checkpoints_resumes_and_caps_the_length(tmp_path, recipe, capsys, tiny_student):
    export = make_export(tmp_path)
    out = tmp_path / "ckpt"
    base = ["--data", str(export), "--output_dir", str(out), "--model", tiny_student, "--per_device_train_batch_size",
            "2", "--save_steps", "1", "--logging_steps", "1", "--gradient_checkpointing", "false"]
    assert recipe.main(base + ["--max_steps", "2", "--keep_checkpoints", "true", "--max_length_cap", "48"]) == 0
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    first = json.loads((out / "metrics.json").read_text())
    # Rows of 62 tokens (a 38-token prompt): cut to the cap as TRL cuts, and said so.
    assert first["max_length"] == 48 and first["rows_cut"] == 4 and first["longest_row_tokens"] == 62
    assert "4 of 4 rows reach max_length 48" in capsys.readouterr().err
    assert first["train_rows"] == 4
    assert not first["resumed"] and first["steps"] == 2
    assert recipe.main(base + ["--max_steps", "3"]) == 0  # the same output: goes on from checkpoint-2
    second = json.loads((out / "metrics.json").read_text())
    assert second["resumed"] and second["steps"] == 3 and not list(out.glob("checkpoint-*"))
    assert [e["step"] for e in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in e] == \
        [1, 2, 3]
    with pytest.raises(ValueError, match="--max_length_cap 16 leaves no response token"):
        recipe.main(base + ["--output_dir", str(tmp_path / "none"), "--max_steps", "1", "--max_length_cap", "16"])


@pytest.mark.slow
def test_train_saves_a_run_that_ended_before_its_model_was_saved(tmp_path, recipe, monkeypatch, tiny_student):
    """table1's entry: a run killed after its last checkpoint (the disk filled as the model was
    written) is saved from that checkpoint when rerun, not trained a step further."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    export = make_export(tmp_path)
    config = recipe.RecipeConfig(data=str(export), output=str(tmp_path / "out"), model=tiny_student, max_steps=3,
                                 batch_size=1, grad_accum=3, learning_rate=3e-3, max_length=256, save_steps=1,
                                 logging_steps=1)  # 4 rows: 2 steps an epoch, the last one short
    real_save = recipe._save

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(recipe, "_save", disk_full)
    with pytest.raises(OSError):
        recipe.train(config)
    checkpoints = tmp_path / "out" / "checkpoints"
    assert [p.name for p in checkpoints.glob("checkpoint-*")] == ["checkpoint-3"]  # the last one only
    trained = load_file(checkpoints / "checkpoint-3" / "model.safetensors")
    monkeypatch.setattr(recipe, "_save", real_save)
    metrics = recipe.train(config)
    assert metrics["steps"] == 3 and metrics["resumed"] and [e["step"] for e in metrics["log"]] == [1, 2, 3]
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).state_dict()
    assert all(torch.equal(saved[name], weights) for name, weights in trained.items())
    assert not checkpoints.exists()


@pytest.mark.real_models
def test_recipe_steps_the_real_demo_student(tmp_path, recipe):
    """One optimizer step of a full fine-tune of SmolLM2-135M-Instruct itself (resolved offline)."""
    import torch
    from transformers import AutoModelForCausalLM

    from tessy.models import resolve_model

    export = make_export(tmp_path)
    metrics = recipe.train(recipe.RecipeConfig(data=str(export), output=str(tmp_path / "real"), max_steps=1,
                                               batch_size=2, learning_rate=1e-5, max_length=128, limit=2))
    assert metrics["steps"] == 1 and metrics["train_rows"] == 2 and 0 < metrics["train_loss"] < 10
    before = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct"), dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "real", dtype=torch.float32)
    changed = [n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters()) if not torch.equal(a, b)]
    assert changed  # the step moved the weights that were saved
