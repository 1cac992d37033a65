"""`tessy export RUN... --to FORMAT -o OUT`: SFT data from records, with a dataset card.

Thin over `tessy.export.export_runs`; see that module for the promises (deterministic, written to a
temporary folder and renamed, records only read). Prints the export's notes (why
``--check-template`` dropped rows, in one line with the counts; what the dataset card asks to fill
in; which trainer got no config with ``--trainer-configs``, and why), then one summary line, and
with ``--trainer-configs`` one line naming the configs written.
"""

from __future__ import annotations

import argparse

from tessy.cli.main import positive_int


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _range(text: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, got {text!r}")
    try:
        return float(low or 0.0), float(high or 1.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers in MIN:MAX, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="Run output folders (or their records.jsonl).")
    parser.add_argument("--to", default="messages", metavar="FORMAT",
                        help="messages (conversational JSONL for TRL's SFTTrainer), parquet, hf (a datasets "
                             "save_to_disk folder) or sharegpt (LLaMA-Factory, with dataset_info.json). "
                             "Default: messages.")
    parser.add_argument("-o", "--output", required=True, help="Output folder (written whole, then renamed into place).")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing output folder.")
    parser.add_argument("--finish-reasons", type=_csv, default=("stop",), metavar="R1,R2",
                        help="Finish reasons to keep (default: stop; also: length, max_spans, repetition, context).")
    parser.add_argument("--method", type=_csv, default=None, metavar="M1,M2",
                        help="Keep only these methods (default: any).")
    parser.add_argument("--teacher-share", type=_range, default=(0.0, 1.0), metavar="MIN:MAX",
                        help="Keep responses whose teacher-token share is in [MIN, MAX] (default 0:1).")
    parser.add_argument("--verification", type=_csv, default=None, metavar="S1,S2",
                        help="Keep only these verdicts from `tessy verify`: pass, fail, error, unverified "
                             "(default: no filter). With several verifiers a record passes only if all passed it.")
    parser.add_argument("--verifier", default=None, help="Use this verifier's verdicts only (default: all of the run's).")
    parser.add_argument("--validation-fraction", type=float, default=0.05,
                        help="Share of ids in the validation split, chosen by a hash of the id (default 0.05).")
    parser.add_argument("--split-seed", type=int, default=0, help="Seed of the id hash for the split (default 0).")
    parser.add_argument("--name", default="tessy", help="Dataset name (card title, LLaMA-Factory entries).")
    parser.add_argument("--no-spans", action="store_true", help="Leave the per-span provenance column out.")
    parser.add_argument("--layout", choices=("auto", "messages", "prompt-completion"), default="auto",
                        help="How rows carry the response: messages (a conversation the trainer renders with the "
                             "chat template) or prompt-completion (the prompt already rendered through the "
                             "template, the completion the student's text after it; for templates that drop the "
                             "thinking from assistant turns). Default auto: prompt-completion for a deepseek-r1 "
                             "student, messages otherwise.")
    parser.add_argument("--reasoning-field", choices=("auto", "content", "reasoning_content", "thinking"),
                        default="auto",
                        help="Where a message's thinking goes (messages layout): content (the raw text, e.g. "
                             "Qwen3's <think>...</think>), or reasoning_content / thinking (that field holds the "
                             "thinking, content only the final answer). Default auto: thinking for a harmony "
                             "(GPT-OSS) student, content otherwise.")
    parser.add_argument("--tokenizer", default=None, metavar="TOKENIZER",
                        help="The student's tokenizer (folder or model name) for --check-template, --max-tokens and "
                             "prompt-completion prompts (default: the student model named in the records).")
    parser.add_argument("--check-template", nargs="?", const="student", default=None, metavar="TOKENIZER",
                        help="Drop rows that do not survive the student's chat template as the trainer renders "
                             "them, and say why in one line (TOKENIZER, else --tokenizer, else the student model "
                             "named in the records).")
    parser.add_argument("--max-tokens", type=positive_int, default=None, metavar="N",
                        help="Drop rows whose rendered conversation is longer than N student tokens (the "
                             "trainer's maximum length), rather than letting the trainer cut them.")
    parser.add_argument("--trainer-configs", action="store_true",
                        help="Also write trainer configs next to the data, at the TESSY paper's size (9 epochs, global "
                             "batch 128, learning rate 5e-5) and with lengths from the data (the longest row in student "
                             "tokens): trl_sft.yaml (examples/sft/train.py --config), llamafactory_sft.yaml with "
                             "dataset_info.json (template from the student format, cutoff_len from the data) and "
                             "xtuner_sft.py (XTuner v1). A trainer that cannot read the export as laid out gets none, "
                             "and the reason is printed. Needs the student's tokenizer (see --tokenizer).")
    parser.add_argument("--license", default=None, metavar="ID",
                        help="The dataset card's license (default: the models' license where tessy knows it, "
                             "else a placeholder to fill in).")
    parser.add_argument("--language", type=_csv, default=None, metavar="CODE1,CODE2",
                        help="The dataset card's language codes (default: en when the data is clearly English, "
                             "else a placeholder to fill in).")


def run(args: argparse.Namespace) -> int:
    from tessy.export import Filters, export_runs

    filters = Filters(finish_reasons=args.finish_reasons, methods=args.method, teacher_share=args.teacher_share,
                      verification=args.verification, verifier=args.verifier, max_tokens=args.max_tokens)
    spec = args.check_template if args.check_template not in (None, "student") else args.tokenizer
    result = export_runs(args.runs, args.output, to=args.to, filters=filters,
                         validation_fraction=args.validation_fraction, split_seed=args.split_seed,
                         dataset_name=args.name, spans=not args.no_spans, overwrite=args.overwrite,
                         check_template=bool(args.check_template), tokenizer_spec=spec, layout=args.layout,
                         reasoning_field=args.reasoning_field, license=args.license, language=args.language,
                         trainer_configs=args.trainer_configs)
    for note in result["notes"]:
        print(f"tessy export: {note}")
    splits = ", ".join(f"{k} {v}" for k, v in result["splits"].items()) or "nothing"
    dropped = ", ".join(f"{k} {v}" for k, v in result["dropped"].items()) or "none"
    options = result["options"]
    how = f"layout {options['layout']}"
    if options["layout"] == "messages" and options["reasoning_field"] != "content":
        how += f", thinking in {options['reasoning_field']}"
    print(f"exported {result['kept']} of {result['records_read']} records ({splits}) as {result['format']} "
          f"({how}) to {result['output']}; dropped: {dropped}")
    trainers = result.get("trainer_configs")
    if trainers and trainers["files"]:
        print(f"trainer configs in {result['output']}: {', '.join(trainers['files'])} (max length "
              f"{trainers['max_length']}: the longest row is {trainers['longest_row_tokens']} student tokens)")
    return 0
