"""The trainer configs `tessy export --trainer-configs` writes (`tessy.export.trainers`), each loaded
or validated the way its trainer reads it, on exports made with the students' real chat templates
(`tests.real_templates`: Qwen3, DeepSeek-R1-Distill, GPT-OSS; SmolLM2's own for a plain student).

- TRL, for real: ``trl_sft.yaml`` goes through the recipe's own parser (`trl.TrlParser` over its
  arguments and `trl.SFTConfig`, exactly what ``python examples/sft/train.py --config`` does). Its
  ``max_length`` must hold the longest row, counted here with the student's chat template.
- LLaMA-Factory: not a dependency (it pins its own transformers / datasets / trl ranges), so these
  tests check against its schema as read in its source (hiyouga/LLaMA-Factory at ff6d4d12e and the
  0.9.5 wheel: data/README.md, src/llamafactory/data/parser.py ``DatasetAttr``, data/template.py):
  the dataset_info keys, ``formatting``, ``columns`` and ``tags``; the rows read through those tags
  the way its ShareGPT converter reads them (system first, then user / assistant alternating); the
  template name among its templates; and, for Qwen3, LLaMA-Factory's ``qwen3`` template strings
  render every row exactly as Qwen3's own template does. Where ``llamafactory`` imports, the export
  also goes through LLaMA-Factory itself (`test_llamafactory_itself_reads_the_export`: its argument
  parser on the YAML, its dataset loader, template and supervised preprocessing; the learned tokens
  must be exactly the response and the end of turn). That test ran during development with
  llamafactory 0.9.5 installed beside the project (``torchaudio`` stubbed); it is skipped here.
- XTuner: not installable here (XTuner v1 is only in its repository, and needs transformers 4.56,
  mmengine from git and torchvision), so against its schema as read in its source (InternLM/xtuner
  at b934f4620: xtuner/v1/train/trainer.py ``TrainerConfig``, datasets/config.py,
  datasets/sft_tokenize_fn/openai.py, config/optim.py, data_proto/templates and messages/chat.py):
  the config file is executed with stand-ins for the classes it imports, each taking exactly the
  fields the pydantic model declares (``extra="forbid"``) and requiring the required ones; every
  row is checked as XTuner's ``ChatMsg`` validates it; and for Qwen3 XTuner's ``qwen3`` template
  strings render every row exactly as Qwen3's own template does.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import yaml

from tessy.cli.main import EXIT_ERROR, main
from tessy.export import export_runs
from tessy.export.trainers import MARGIN, PAPER, fit_length
from tests.real_templates import harmony_real, qwen3_real, r1_real
from tests.test_export import write_run
from tests.test_export_layouts import student_records

ROOT = Path(__file__).resolve().parents[1]
REAL = {"qwen3": qwen3_real, "deepseek-r1": r1_real, "harmony": harmony_real}

# LLaMA-Factory's schema (data/README.md; DatasetAttr in src/llamafactory/data/parser.py).
LF_ENTRY_KEYS = {"hf_hub_url", "ms_hub_url", "script_url", "cloud_file_name", "file_name", "formatting", "ranking",
                 "subset", "split", "folder", "num_samples", "columns", "tags"}
LF_FORMATTING = {"alpaca", "sharegpt", "openai"}
LF_COLUMNS = {"prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos", "audios",
              "chosen", "rejected", "kto_tag"}
LF_TAGS = {"role_tag", "content_tag", "user_tag", "assistant_tag", "observation_tag", "function_tag", "system_tag"}
LF_TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                   "system_tag": "system"}
#: Templates registered in src/llamafactory/data/template.py (those for the students tessy knows).
LF_TEMPLATES = {"qwen3", "qwen3_nothink", "deepseek3", "deepseekr1", "gpt_oss", "empty"}
LF_DEEPSEEKR1 = {"user": "<｜User｜>{}<｜Assistant｜>", "assistant": "{}<｜end▁of▁sentence｜>"}
LF_QWEN3 = {"system": "<|im_start|>system\n{}<|im_end|>\n",
            "user": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", "assistant": "{}<|im_end|>\n"}

# XTuner v1's schema: field -> required, per pydantic model (all extra="forbid").
XTUNER_MODELS = {
    "xtuner.v1.train.TrainerConfig": {
        "model_cfg": True, "load_from": False, "tokenizer_path": False, "dataset_cfg": False, "dataloader_cfg": True,
        "optim_cfg": True, "lr_cfg": True, "loss_cfg": False, "fsdp_cfg": False, "global_batch_size": True,
        "work_dir": False, "log_dir": False, "sp_size": False, "total_step": False, "total_epoch": False,
        "resume_cfg": False, "auto_resume": False, "load_checkpoint_cfg": False, "strict_load": False,
        "checkpoint_interval": False, "checkpoint_maxkeep": False, "async_hf_export": False,
        "skip_checkpoint_validation": False, "patch_for_dcp_finish": False, "async_checkpoint": False,
        "snapshot_interval": False, "check_health_interval": False, "hf_interval": False, "hf_max_keep": False,
        "exp_tracker": False, "profile_step": False, "profile_time": False, "profile_memory": False,
        "intra_layer_micro_batch": False, "seed": False, "dist_backend": False, "debug": False,
        "debug_skip_save": False, "prober_list": False, "do_clip": False, "grad_norm_dtype": False,
        "hooks_config": False, "internal_metrics_cfg": False},
    "xtuner.v1.datasets.config.DatasetConfig": {
        "anno_path": True, "cache_dir": False, "cache_tag": False, "name": False, "class_name": False,
        "sample_ratio": False, "enable_sequential_sampler": False, "enable_mmap_shared": False, "media_root": False,
        "disable_filter": False},
    "xtuner.v1.datasets.config.DataloaderConfig": dict.fromkeys(
        ["dataset_config_list", "collator", "pack_to_max_length", "pack_level", "pack_max_length", "pack_chunk_size",
         "pack_workers", "global_pack", "sampler_type", "group_by_length", "pack_extra_buffer_size", "num_workers",
         "pad_token_id", "tokenizer_hash", "pack_config_path", "sampler_config_path", "round_up"], False),
    "xtuner.v1.datasets.sft_tokenize_fn.OpenaiTokenizeFunctionConfig": {"chat_template": True, "max_length": False,
                                                                        "hash": False},
    "xtuner.v1.config.AdamWConfig": dict.fromkeys(["lr", "max_grad_norm", "skip_grad_norm_threshold", "weight_decay",
                                                   "betas", "eps", "foreach", "swap_optimizer"], False),
    "xtuner.v1.config.LRConfig": {"lr_type": False, "warmup_ratio": False, "lr_min": False},
}
XTUNER_LR_TYPES = {"cosine", "linear", "constant"}
#: CHAT_TEMPLATE_MAP's keys (xtuner/v1/data_proto/templates/__init__.py).
XTUNER_TEMPLATES = {"glm5.2", "qwen3.5-vl", "intern-s1", "internvl-3.5", "qwen3-vl", "qwen3-vl-rl", "llama3", "qwen3",
                    "gpt-oss", "deepseek-v3"}
XTUNER_QWEN3 = {"system": "<|im_start|>system\n{}<|im_end|>\n",
                "user": "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n", "assistant": "{}<|im_end|>",
                "sep": "\n"}
#: ChatMsg's fields (xtuner/v1/data_proto/messages/chat.py) and roles.
XTUNER_MESSAGE_KEYS = {"role", "content", "reasoning_content", "tool_calls", "loss", "thinking", "name", "meta",
                       "tool_call_id"}
XTUNER_ROLES = {"assistant", "user", "system", "developer", "pretrain", "tool"}


def export(tmp_path: Path, name: str, *, n: int = 6, tokenizer=None, **options) -> Path:
    out = tmp_path / f"out-{name}-{len(list(tmp_path.glob('out-*')))}"
    records = student_records(name, n)
    tokenizer = tokenizer if tokenizer is not None else REAL[name]()
    result = export_runs([write_run(tmp_path / f"run-{out.name}", records)], out, tokenizer=tokenizer,
                         validation_fraction=0.3, trainer_configs=True, **options)
    assert result["kept"] == n, result
    return out


def data_rows(folder: Path, split: str = "train") -> list[dict]:
    from datasets import load_dataset

    files = sorted(folder.glob(f"{split}.*"))
    builder = "parquet" if files[0].suffix == ".parquet" else "json"
    return list(load_dataset(builder, data_files=str(files[0]), split="train"))


def longest_row(folder: Path, tokenizer) -> int:
    """The longest exported row in student tokens, counted here: the conversation through the
    chat template (no special tokens added), or the prompt-completion text."""
    lengths = []
    for split in ("train", "validation"):
        if not list(folder.glob(f"{split}.*")):
            continue
        for row in data_rows(folder, split):
            if "prompt" in row:
                lengths.append(len(tokenizer(row["prompt"] + row["completion"])["input_ids"]))
            else:
                messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
                text = tokenizer.apply_chat_template(messages, tokenize=False)
                lengths.append(len(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return max(lengths)


def trainer_configs(folder: Path) -> dict:
    return json.loads((folder / "export.json").read_text())["trainer_configs"]


# ---------------------------------------------------------------------------- TRL (real)


@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1", "harmony"])
def test_trl_config_loads_with_the_recipes_parser(tmp_path, recipe, name):
    from trl import SFTConfig

    out = export(tmp_path, name)
    summary = trainer_configs(out)
    longest = longest_row(out, REAL[name]())
    assert summary["longest_row_tokens"] == longest and summary["max_length"] == fit_length(longest)
    assert summary["max_length"] >= longest + MARGIN and summary["max_length"] % 64 == 0
    args_recipe, args = recipe.parse(["--config", str(out / "trl_sft.yaml"), "--use_cpu", "true"])
    assert isinstance(args, SFTConfig)
    assert args_recipe.data == str(out.resolve()) and args_recipe.model == student_records(name, 1)[0]["models"][
        "student"]["model"]
    assert recipe.load_export(args_recipe.data)["train"].num_rows == len(data_rows(out))
    assert args.max_length == summary["max_length"] and args.output_dir == f"{out.resolve()}-student-trl"
    assert (args.num_train_epochs, args_recipe.global_batch_size, args.learning_rate) == \
        (PAPER["num_train_epochs"], PAPER["global_batch_size"], PAPER["learning_rate"])


def test_the_trl_config_is_the_paper_preset_with_the_paths(tmp_path, recipe):
    """examples/sft/paper.yaml and the generated trl_sft.yaml agree on every hyper-parameter."""
    out = export(tmp_path, "qwen3")
    generated = yaml.safe_load((out / "trl_sft.yaml").read_text())
    preset = yaml.safe_load((ROOT / "examples" / "sft" / "paper.yaml").read_text())
    paths = {"data", "model", "output_dir", "max_length"}
    assert {k: v for k, v in generated.items() if k not in paths} == preset


# ---------------------------------------------------------------------------- LLaMA-Factory (schema)


def lf_conversations(folder: Path, entry: dict) -> list[tuple[str, list[tuple[str, str]]]]:
    """The rows of a dataset_info entry as LLaMA-Factory's ShareGPT converter reads them: (system,
    [(role, content), ...]) with the roles checked to alternate user / assistant."""
    assert entry["formatting"] == "sharegpt"
    column = entry.get("columns", {}).get("messages", "conversations")
    tags = {**LF_TAG_DEFAULTS, **entry.get("tags", {})}
    read = []
    for row in data_rows(folder, Path(entry["file_name"]).stem):
        messages = row[column]
        system = row.get(entry.get("columns", {}).get("system", "")) or ""
        if messages and messages[0][tags["role_tag"]] == tags["system_tag"]:
            system, messages = messages[0][tags["content_tag"]], messages[1:]
        turns = []
        for i, message in enumerate(messages):
            expected = tags["user_tag"] if i % 2 == 0 else tags["assistant_tag"]
            assert message[tags["role_tag"]] == expected, (i, message)
            turns.append(("user" if expected == tags["user_tag"] else "assistant", message[tags["content_tag"]]))
        assert len(turns) % 2 == 0, "LLaMA-Factory drops a conversation that does not end with the assistant"
        read.append((system, turns))
    return read


def check_llamafactory(out: Path, longest: int, template: str | None) -> list[tuple[str, list]]:
    config = {k: v for k, v in yaml.safe_load((out / "llamafactory_sft.yaml").read_text()).items()}
    assert {"model_name_or_path", "stage", "do_train", "finetuning_type", "dataset", "dataset_dir",
            "output_dir"} <= config.keys()
    assert (config["stage"], config["do_train"], config["finetuning_type"]) == ("sft", True, "full")
    assert config["dataset_dir"] == str(out.resolve()) and config.get("template") == template
    assert template is None or template in LF_TEMPLATES
    assert config["cutoff_len"] >= longest and config["cutoff_len"] != 2048
    assert config["num_train_epochs"] == PAPER["num_train_epochs"] and config["learning_rate"] == PAPER["learning_rate"]
    assert config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] * 8 == \
        PAPER["global_batch_size"]
    info = json.loads((out / "dataset_info.json").read_text())
    names = [config["dataset"]] + ([config["eval_dataset"]] if "eval_dataset" in config else [])
    assert names == [n for n in (f"tessy_{s}" for s in ("train", "validation")) if n in info]
    read = []
    for name in names:
        entry = info[name]
        assert set(entry) <= LF_ENTRY_KEYS and "file_name" in entry and entry["formatting"] in LF_FORMATTING
        assert set(entry.get("columns", {})) <= LF_COLUMNS and set(entry.get("tags", {})) <= LF_TAGS
        assert (out / entry["file_name"]).is_file()
        read += lf_conversations(out, entry)
    return read


@pytest.mark.parametrize("to", ["messages", "parquet", "sharegpt"])
def test_llamafactory_config_for_a_qwen3_student(tmp_path, to):
    tok = qwen3_real()
    out = export(tmp_path, "qwen3", to=to)
    read = check_llamafactory(out, longest_row(out, tok) if to != "sharegpt" else 0, "qwen3")
    rows = data_rows(out) + data_rows(out, "validation")
    assert len(read) == len(rows) == 6
    # LLaMA-Factory's qwen3 template renders what it read exactly as Qwen3's own template renders the row.
    for (system, turns), row in zip(read, rows):
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": role, "content": text} for role, text in turns]
        text = LF_QWEN3["system"].format(system) if system else ""
        text += "".join(LF_QWEN3[role].format(content) for role, content in turns)
        assert text == tok.apply_chat_template(messages, tokenize=False)
        response = row["messages"][-1]["content"] if "messages" in row else row["conversations"][-1]["value"]
        assert turns[-1] == ("assistant", response) and response.startswith("<think>\n")


def test_llamafactory_config_for_deepseek_r1_and_plain_students(tmp_path, smol_tokenizer):
    # R1: LLaMA-Factory's deepseekr1 template keeps the thinking of the last turn, so it takes the
    # raw text (R1's own Jinja template would drop it: that is why tessy's default is prompt-completion).
    tok = r1_real()
    out = export(tmp_path, "deepseek-r1", layout="messages", reasoning_field="content", check_template=False)
    # The rows as LLaMA-Factory's deepseekr1 template renders them (BOS, system, user, response, EOS).
    read = check_llamafactory(out, 0, "deepseekr1")
    rendered = [tok.bos_token + system + "".join(LF_DEEPSEEKR1[role].format(text) for role, text in turns)
                for system, turns in read]
    longest = max(len(tok(text, add_special_tokens=False)["input_ids"]) for text in rendered)
    assert trainer_configs(out)["max_length"] >= longest
    assert all(turns[-1][1].startswith("<think>\n") for _, turns in read)
    # R1's own chat template drops the thinking, so it alone would undercount what LLaMA-Factory trains on.
    assert longest_row(out, tok) < longest
    # A plain student: no template named, so LLaMA-Factory parses the tokenizer's own chat template.
    out = export(tmp_path, "plain", tokenizer=smol_tokenizer)
    check_llamafactory(out, longest_row(out, smol_tokenizer), None)
    assert "parses the student tokenizer's own chat template" in (out / "llamafactory_sft.yaml").read_text()


@pytest.mark.parametrize("name,options", [("qwen3", {}), ("qwen3", {"to": "parquet"}),
                                          ("deepseek-r1", {"layout": "messages", "check_template": False}),
                                          ("harmony", {"reasoning_field": "content", "check_template": False})])
def test_llamafactory_itself_reads_the_export(tmp_path, name, options):
    """LLaMA-Factory's own parser, loader, template and preprocessing on the generated files."""
    pytest.importorskip("llamafactory.data", reason="llamafactory is not installed")
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args

    tok = REAL[name]()
    out = export(tmp_path, name, **options)
    tok.save_pretrained(tmp_path / "tok")
    config = yaml.safe_load((out / "llamafactory_sft.yaml").read_text())
    config.update(model_name_or_path=str(tmp_path / "tok"), output_dir=str(tmp_path / "lf"), bf16=False,
                  preprocessing_num_workers=None)
    model_args, data_args, training_args, _, _ = get_train_args(config)
    assert (data_args.template, data_args.cutoff_len) == (config["template"], trainer_configs(out)["max_length"])
    assert training_args.gradient_accumulation_steps == 16 and training_args.learning_rate == PAPER["learning_rate"]
    template = get_template_and_fix_tokenizer(tok, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", tokenizer=tok)
    responses = sorted(r["messages"][-1]["content"] for r in data_rows(out))
    learned = sorted(tok.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100])
                     for ex in module["train_dataset"])
    end = {"qwen3": "<|im_end|>\n", "deepseek-r1": tok.eos_token, "harmony": "<|return|>"}[name]
    assert learned == [r + end for r in responses]  # nothing cut, nothing else learned
    assert max(len(ex["input_ids"]) for ex in module["train_dataset"]) <= data_args.cutoff_len


# ---------------------------------------------------------------------------- XTuner (schema)


class _XtunerModel:
    """A stand-in for one XTuner pydantic config: exactly its fields (extra="forbid"), the required ones required."""

    def __init__(self, path: str, **values):
        fields = XTUNER_MODELS[path]
        extra = set(values) - set(fields)
        missing = {k for k, required in fields.items() if required} - set(values)
        if extra or missing:
            raise TypeError(f"{path}: extra fields {sorted(extra)} not permitted, required {sorted(missing)} missing")
        self.path, self.values = path, values


def load_xtuner_config(path: Path, monkeypatch) -> dict:
    """Execute the config as XTuner's Config.fromfile does, with stand-ins for what it imports."""
    modules = {}
    for dotted in XTUNER_MODELS:
        module_name, _, class_name = dotted.rpartition(".")
        module = modules.setdefault(module_name, types.ModuleType(module_name))
        setattr(module, class_name, lambda _path=dotted, **values: _XtunerModel(_path, **values))
    modules["xtuner.v1.model"] = model = types.ModuleType("xtuner.v1.model")
    model.get_model_config_from_hf = lambda model_path: ("model config from", model_path)
    for name in ("xtuner", "xtuner.v1", "xtuner.v1.datasets"):
        modules.setdefault(name, types.ModuleType(name))
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("name", ["qwen3", "harmony"])
def test_xtuner_config_validates_against_xtuners_schema(tmp_path, monkeypatch, name):
    tok = REAL[name]()
    out = export(tmp_path, name)
    config = load_xtuner_config(out / "xtuner_sft.py", monkeypatch)
    trainer = config["trainer"]
    assert trainer.path == "xtuner.v1.train.TrainerConfig"
    values = trainer.values
    assert values["model_cfg"] == ("model config from", Path(values["load_from"]))
    assert values["load_from"] == values["tokenizer_path"] == student_records(name, 1)[0]["models"]["student"]["model"]
    assert (values["global_batch_size"], values["total_epoch"], values["optim_cfg"].values["lr"]) == \
        (PAPER["global_batch_size"], PAPER["num_train_epochs"], PAPER["learning_rate"])
    assert values["lr_cfg"].values["lr_type"] in XTUNER_LR_TYPES
    loader = values["dataloader_cfg"].values
    (entry,) = loader["dataset_config_list"]
    assert set(entry) == {"dataset", "tokenize_fn"}  # DatasetCombine
    assert Path(entry["dataset"].values["anno_path"]) == out.resolve() / "train.jsonl"
    tokenize = entry["tokenize_fn"].values
    assert tokenize["chat_template"] in XTUNER_TEMPLATES
    assert tokenize["chat_template"] == {"qwen3": "qwen3", "harmony": "gpt-oss"}[name]
    longest = longest_row(out, tok)
    assert tokenize["max_length"] >= longest and loader["pack_max_length"] >= tokenize["max_length"]
    # Every row as XTuner's OpenaiTokenizeFunction and ChatMsg take it.
    for row in (json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()):
        messages = row["messages"]
        for message in messages:
            assert set(message) <= XTUNER_MESSAGE_KEYS and message["role"] in XTUNER_ROLES
            assert isinstance(message["content"], str)
            assert "thinking" not in message or message["role"] == "assistant"
        last = messages[-1]
        if name == "harmony":  # gpt-oss reads the thinking from `thinking`, the answer from content
            assert last["thinking"] and "<|" not in last["content"]
            continue
        assert "thinking" not in last  # XTuner's qwen3 template has no thinking slot: raw text
        text = "".join(XTUNER_QWEN3[m["role"]].format(m["content"]) for m in messages) + XTUNER_QWEN3["sep"]
        assert text == tok.apply_chat_template(messages, tokenize=False)


# ---------------------------------------------------------------------------- what gets no config, and the CLI


def test_a_trainer_that_cannot_read_the_export_gets_no_config_and_says_why(tmp_path):
    out = export(tmp_path, "deepseek-r1")  # default: prompt-completion
    skipped = trainer_configs(out)["skipped"]
    assert set(skipped) == {"llamafactory", "xtuner"} and "--layout messages" in skipped["llamafactory"]
    assert "no chat template for the deepseek-r1" in skipped["xtuner"]
    assert sorted(p.name for p in out.glob("*_sft.*")) == ["trl_sft.yaml"]
    assert not (out / "dataset_info.json").exists()
    out = export(tmp_path, "harmony")  # thinking in `thinking`: LLaMA-Factory reads the text only
    assert set(trainer_configs(out)["skipped"]) == {"llamafactory"}
    assert "--reasoning-field content" in trainer_configs(out)["skipped"]["llamafactory"]
    assert (out / "xtuner_sft.py").exists()
    out = export(tmp_path, "qwen3", to="hf")
    assert set(trainer_configs(out)["skipped"]) == {"llamafactory", "xtuner"}
    out = export(tmp_path, "qwen3", reasoning_field="reasoning_content")
    assert "'content', not from 'reasoning_content'" in trainer_configs(out)["skipped"]["xtuner"]


def test_the_command_writes_them_and_the_data_still_loads(tmp_path, capsys):
    from datasets import load_dataset

    tok = qwen3_real()
    tok.save_pretrained(tmp_path / "tok")
    run = write_run(tmp_path / "run", student_records("qwen3", 6))
    assert main(["export", str(run), "-o", str(tmp_path / "out"), "--trainer-configs", "--tokenizer",
                 str(tmp_path / "tok"), "--validation-fraction", "0.3"]) == 0
    printed = capsys.readouterr().out
    summary = trainer_configs(tmp_path / "out")
    assert f"max length {summary['max_length']}" in printed and "xtuner_sft.py" in printed
    assert summary["longest_row_tokens"] == longest_row(tmp_path / "out", tok)
    # The card's configs still name only the data files.
    data = load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "hf"))
    assert set(data) == {"train", "validation"} and data["train"].num_rows + data["validation"].num_rows == 6
    records = student_records("qwen3", 2)
    for record in records:
        del record["models"]["student"]["model"]
    anonymous = write_run(tmp_path / "anonymous", records)
    assert main(["export", str(anonymous), "-o", str(tmp_path / "none"), "--trainer-configs"]) == EXIT_ERROR
    assert "name its tokenizer with --tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_fit_length():
    assert [fit_length(n) for n in (0, 48, 49, 1000)] == [64, 64, 128, 1024]
    assert fit_length(100, margin=0) == 128 and fit_length(128, margin=0) == 128
    with pytest.raises(ValueError, match="longest -1"):
        fit_length(-1)
