"""`--input` names a Hub dataset (`tessy.hub_inputs`): read from the local caches when there is no
network, a one-line error within seconds when it is not cached, and dataset repository folders
(as `hf download --local-dir` writes them) read with their own splits and subsets.

The Hub cache here is the real huggingface_hub layout (blobs, refs/main, snapshots/<commit> of
symlinks) in a temporary HF_HOME, read by the real `snapshot_download` and `load_dataset`; the
"no network" cases are an HF_ENDPOINT on a closed port and one on a server that takes the
connection and never answers (which keeps `datasets` retrying for minutes). They run in a fresh
process each, since huggingface_hub and datasets read HF_HOME and the offline switches on import.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tessy.hub_inputs import is_hub_name, is_repo_folder, split_subset
from tessy.inputs import InputError, count_prompts, read_prompts

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TESSY = str(Path(sys.executable).with_name("tessy"))


def parquet_bytes(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def hub_cache(home: Path, repo: str, files: dict[str, bytes]) -> None:
    """`files` as huggingface_hub keeps a downloaded dataset repo: blobs by sha256, the snapshot
    of commit COMMIT as relative symlinks to them, refs/main naming the commit."""
    root = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = root / "snapshots" / COMMIT / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)


def split_files(prefix: str = "data/") -> dict[str, bytes]:
    return {f"{prefix}{split}-00000-of-00001.parquet":
            parquet_bytes({"id": [f"{split}{i}" for i in range(n)],
                           "prompt": [f"{split} question {i}" for i in range(n)]})
            for split, n in (("train", 5), ("test", 2))}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_env(home: Path, endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRANSFORMERS_OFFLINE"}
    return {**env, "HF_HOME": str(home), "HF_ENDPOINT": endpoint, **extra}


READ = """
import json, sys
from tessy.cli.synthesize import check_input
from tessy.config import SynthesizeConfig
from tessy.inputs import count_prompts, read_prompts
out = {}
for name, split in json.loads(sys.argv[1]):
    items = list(read_prompts(name, split=split))
    out[f"{name}|{split}"] = {"ids": [i.id for i in items], "count": count_prompts(name, split=split),
                              "check": check_input(SynthesizeConfig(input=name, split=split or ""))}
print(json.dumps(out))
"""


def test_a_hub_name_is_read_from_the_hub_cache_when_the_hub_cannot_be_reached(tmp_path):
    home = tmp_path / "home"
    hub_cache(home, "someorg/math-prompts", {"README.md": b"---\nlicense: mit\n---\n# prompts\n", **split_files()})
    asks = [["someorg/math-prompts", None], ["someorg/math-prompts", "test"], ["someorg/math-prompts:default", "test"]]
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", READ, json.dumps(asks)], capture_output=True, text=True, timeout=120,
                         env=fresh_env(home, f"http://127.0.0.1:{closed_port()}"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout)
    train = [f"train{i}" for i in range(5)]
    assert got["someorg/math-prompts|None"] == {"ids": train, "count": 5, "check": 5}  # train, not train + test
    assert got["someorg/math-prompts|test"] == {"ids": ["test0", "test1"], "count": 2, "check": 2}
    assert got["someorg/math-prompts:default|test"]["ids"] == ["test0", "test1"]
    assert "Retrying" not in run.stderr and "couldn't be found" not in run.stderr  # datasets' noise stays out
    print(f"read from the hub cache in {time.perf_counter() - started:.1f}s")


@pytest.mark.parametrize("network", ["closed-port", "swallowed", "offline-env"])
def test_a_hub_name_not_cached_without_network_is_a_one_line_error_within_seconds(tmp_path, network):
    listener = socket.socket()  # takes connections (the kernel answers the handshake), never replies
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1] if network == 'swallowed' else closed_port()}"
    extra = {"HF_HUB_OFFLINE": "1"} if network == "offline-env" else {}
    started = time.perf_counter()
    try:
        run = subprocess.run([TESSY, "synthesize", "--input", "someorg/missing-prompts", "--output",
                              str(tmp_path / "out")], capture_output=True, text=True, timeout=60,
                             env=fresh_env(tmp_path / "home", endpoint, **extra), cwd=tmp_path)
    finally:
        listener.close()
    took = time.perf_counter() - started
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    line = lines[0]
    assert line.startswith("tessy synthesize: error: someorg/missing-prompts: no such file or folder, and the Hub "
                           "dataset 'someorg/missing-prompts' is not cached here")
    assert "hf download someorg/missing-prompts --repo-type dataset --local-dir DIR) and pass --input DIR" in line
    assert "copy that machine's Hugging Face cache here" in line
    assert ("offline mode is on" if network == "offline-env" else f"the Hub ({endpoint}) cannot be reached") in line
    assert not (tmp_path / "out").exists()
    assert took < 20, f"{took:.1f}s"  # a fresh interpreter's imports plus at most the 3 s probe
    print(f"{network}: {took:.1f}s")


def test_what_counts_as_a_hub_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    assert is_hub_name("openai/gsm8k") and is_hub_name("gsm8k") and is_hub_name("openai/gsm8k:main")
    assert not is_hub_name("local")  # it exists here
    assert not any(map(is_hub_name, ["prompts.jsonl", "data/p.parquet", "a/b/c", "/abs/name", "x.json.gz"]))
    assert split_subset("openai/gsm8k:main") == ("openai/gsm8k", "main") and split_subset("local") == ("local", None)
    with pytest.raises(FileNotFoundError, match="prompt file not found: nope.jsonl"):
        read_prompts("nope.jsonl")  # a missing file stays a missing file: no Hub lookup
    with pytest.raises(FileNotFoundError):
        count_prompts("a/b/nope")


def test_a_dataset_repository_folder_is_read_with_its_splits_and_subsets(tmp_path):
    """What `hf download REPO --repo-type dataset --local-dir DIR` leaves, read with load_dataset."""
    plain = tmp_path / "plain"  # no card: data files only in a subfolder, split names in the file names
    for rel, data in split_files().items():
        (plain / rel).parent.mkdir(parents=True, exist_ok=True)
        (plain / rel).write_bytes(data)
    assert is_repo_folder(plain)
    assert [i.id for i in read_prompts(plain)] == [f"train{i}" for i in range(5)]
    assert count_prompts(plain) == 5 and count_prompts(plain, split="test") == 2
    with pytest.raises(InputError, match=r'plain: cannot load this dataset .*Unknown split "validation"'):
        read_prompts(plain, split="validation")

    repo = tmp_path / "gsm"  # two subsets declared in the card, as openai/gsm8k does
    for subset in ("main", "socratic"):
        for split, n in (("train", 3), ("test", 2)):
            (repo / subset).mkdir(parents=True, exist_ok=True)
            (repo / subset / f"{split}-00000-of-00001.parquet").write_bytes(
                parquet_bytes({"question": [f"{subset} {split} {i}" for i in range(n)]}))
    configs = "".join(f"- config_name: {s}\n  data_files:\n  - split: train\n    path: {s}/train-*\n"
                      f"  - split: test\n    path: {s}/test-*\n" for s in ("main", "socratic"))
    (repo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# gsm\n")
    with pytest.raises(InputError, match=rf"{repo}: holds several subsets \(main, socratic\); choose one as "
                                         rf"--input {repo}:SUBSET \(e.g. --input {repo}:main\)"):
        read_prompts(repo, prompt_field="question")
    texts = [i.messages[-1]["content"] for i in read_prompts(f"{repo}:socratic", prompt_field="question", split="test")]
    assert texts == ["socratic test 0", "socratic test 1"]
    assert count_prompts(f"{repo}:main") == 3
    with pytest.raises(InputError, match=r"gsm: no row|gsm:main: no column has the prompt field 'prompt'"):
        read_prompts(f"{repo}:main")  # the field check applies as for any dataset
