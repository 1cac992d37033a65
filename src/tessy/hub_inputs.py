"""Prompts from the Hugging Face Hub: `--input ORG/NAME` (or a downloaded copy of such a repository).

Owns how a name that is not a local path becomes a `datasets.Dataset`, and the local folders that
only `datasets.load_dataset` reads (a dataset repository as `hf download --local-dir` writes it).
`tessy.inputs` calls it; rows are then read like any dataset's (`tessy.input_sources.rows_hf`).

- A Hub name is ``NAME`` or ``ORG/NAME``, optionally ``:SUBSET`` (the config `load_dataset` takes
  as ``name``, e.g. ``openai/gsm8k:main``), given where no such local path exists; a missing
  ``prompts.jsonl`` stays a missing file. ``--split`` picks the split (else its only one, or
  ``train``).
- Offline first and fast: when ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` is set, or the Hub
  endpoint (``HF_ENDPOINT``, through ``HTTPS_PROXY`` when set) does not answer an HTTP request
  within `PROBE_S` seconds (no network, no DNS, or a firewall that swallows the connection),
  nothing goes to the network: the dataset is read from `datasets`' own cache
  (what an earlier ``load_dataset(NAME)`` left in ``HF_DATASETS_CACHE``), else from the
  huggingface_hub cache (``hf download NAME --repo-type dataset``, in ``HF_HUB_CACHE``). Found in
  neither: `InputError`, one line naming the dataset and the two ways out (download it where
  there is network and pass the folder, or copy a cache here). It comes within seconds, never
  after `datasets`' minute of retries.
- Online, `datasets.load_dataset` downloads and caches it as usual; its errors (no such dataset,
  a gated one, a missing subset) come back as one line naming the dataset.
- A dataset repository folder (a ``README.md`` dataset card with metadata, or data files only in
  subfolders, as ``hf download --local-dir DIR`` writes) is read with ``load_dataset(DIR)``, so
  its splits are the repository's (train and test are never mixed); ``DIR:SUBSET`` picks a config.
- A dataset is loaded once per process (the run reads it for the check, the count and the rows).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from pathlib import Path
from typing import Any

from tessy.input_sources import JSONL_SUFFIXES, PARQUET_SUFFIXES, InputError, pick_split

#: Seconds the Hub endpoint has to accept a TCP connection before the run counts as offline.
PROBE_S = 3.0
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?(:[\w.-]+)?$")
_DATA_SUFFIXES = (*JSONL_SUFFIXES, *PARQUET_SUFFIXES, ".csv", ".tsv", ".arrow", ".txt", ".gz", ".zst", ".xz", ".zip")
_TRUE = {"1", "ON", "YES", "TRUE"}


def split_subset(text: str) -> tuple[str, str | None]:
    """``'org/name:main'`` -> (``'org/name'``, ``'main'``); a text that exists as a path is kept whole."""
    if os.path.exists(text) or ":" not in text:
        return text, None
    head, _, subset = text.rpartition(":")
    return head, subset or None


def is_hub_name(text: str) -> bool:
    """Whether `text` names a Hub dataset: not a local path, shaped like ``[ORG/]NAME[:SUBSET]``,
    and not a file name (``prompts.jsonl``, ``data.parquet``)."""
    if os.path.exists(text) or not _NAME.match(text):
        return False
    name = split_subset(text)[0].lower()
    return not name.endswith(_DATA_SUFFIXES)


def is_repo_folder(p: Path) -> bool:
    """A dataset repository folder: a README.md dataset card with metadata, or data files only in
    subfolders (not a `save_to_disk` folder; the caller checks that first)."""
    if not p.is_dir():
        return False
    readme = p / "README.md"
    try:
        if readme.is_file() and readme.read_text(encoding="utf-8", errors="replace").startswith("---"):
            return True
    except OSError:
        return False
    top = [f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(_DATA_SUFFIXES)]
    return not top and any(f.name.lower().endswith(_DATA_SUFFIXES) for f in p.rglob("*")
                           if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))


def _one_line(exc: BaseException) -> str:
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ---------------------------------------------------------------------------- is there a network


def _offline_by_env() -> bool:
    value = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE") or \
        os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in _TRUE


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@functools.cache
def hub_unreachable() -> str:
    """'' when the Hub endpoint answers an HTTP request (any status) within PROBE_S seconds, else
    why not, in a few words. The proxy variables apply as for `datasets`; DNS is inside the time
    limit too (the request runs in a thread), and so is a server that takes the connection and
    never answers (which would keep `datasets` retrying for minutes)."""
    import urllib.error
    import urllib.request

    endpoint = _endpoint()
    outcome: list[str] = []

    def ask() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=PROBE_S).close()
            outcome.append("")
        except urllib.error.HTTPError:  # an answer, even a 404, is a network
            outcome.append("")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            outcome.append(getattr(reason, "strerror", None) or str(reason) or type(exc).__name__)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(PROBE_S + 0.5)
    return outcome[0] if outcome else f"no answer in {PROBE_S:.0f} s"


# ---------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _quiet(offline: bool):
    """`datasets` without its cache warnings, and, offline, without network and progress bars."""
    import datasets
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE, datasets.utils.logging.get_verbosity(),
             datasets.utils.are_progress_bars_disabled())
    if offline:  # the switches datasets and huggingface_hub read at call time
        datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
        datasets.utils.disable_progress_bars()
    datasets.utils.logging.set_verbosity_error()
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved[0], saved[1]
        datasets.utils.logging.set_verbosity(saved[2])
        if not saved[3]:
            datasets.utils.enable_progress_bars()


class _NoNetwork(Exception):
    """`load_dataset` failed for want of the network: the caller turns to the caches."""


def _network_failure(exc: BaseException | None) -> str:
    """The name of the error in `exc`'s chain of causes that says the network failed, or ''."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen = 0
    while exc is not None and seen < 20:  # datasets wraps huggingface_hub, which wraps httpx
        name = type(exc).__name__
        if isinstance(exc, (ConnectionError, TimeoutError, LocalEntryNotFoundError)) or \
                (type(exc).__module__.startswith("httpx") and ("Timeout" in name or "Connect" in name)):
            return name
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return ""


def _load(label: str, path: str, subset: str | None, split: str | None, offline: bool):
    with _quiet(offline) as datasets:
        try:
            if split:
                return datasets.load_dataset(path, subset, split=split)
            return pick_split(label, datasets.load_dataset(path, subset), None)
        except InputError:
            raise
        except Exception as exc:  # DatasetNotFoundError, a gated repo, a missing config, ValueError(split)...
            if not offline and (failure := _network_failure(exc)):
                raise _NoNetwork(failure) from None
            configs = re.search(r"available configs: \[([^\]]*)\]", str(exc))
            if configs and not subset:  # datasets' own advice names its API, not our flag
                names = configs.group(1).replace("'", "")
                raise InputError(f"{label}: holds several subsets ({names}); choose one as --input "
                                 f"{label}:SUBSET (e.g. --input {label}:{names.split(',')[0].strip()})") from None
            raise InputError(f"{label}: cannot load this dataset with datasets.load_dataset: {_one_line(exc)}") \
                from None


def _in_datasets_cache(name: str) -> bool:
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    parts = name.split("/")
    parts[-1] = camelcase_to_snakecase(parts[-1])
    return (Path(datasets.config.HF_DATASETS_CACHE) / "___".join(parts)).is_dir()


def _hub_snapshot(name: str) -> str | None:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, repo_type="dataset", local_files_only=True)
    except Exception:  # LocalEntryNotFoundError: not downloaded; a bad name: not cached either
        return None


@functools.lru_cache(maxsize=8)
def load_hub(text: str, split: str | None) -> Any:
    """The split of the Hub dataset `text` (``[ORG/]NAME[:SUBSET]``) as a `datasets.Dataset`."""
    name, subset = split_subset(text)
    why_offline = "offline mode is on (HF_HUB_OFFLINE)" if _offline_by_env() else ""
    if not why_offline and (unreachable := hub_unreachable()):
        why_offline = f"the Hub ({_endpoint()}) cannot be reached ({unreachable})"
    if not why_offline:
        try:
            return _load(text, name, subset, split, offline=False)
        except _NoNetwork as exc:  # the endpoint took the connection but no answer came through
            why_offline = f"the Hub ({_endpoint()}) did not answer ({exc})"
    if _in_datasets_cache(name):
        return _load(text, name, subset, split, offline=True)
    if (snapshot := _hub_snapshot(name)) is not None:
        return _load(text, snapshot, subset, split, offline=True)
    import datasets.config
    import huggingface_hub.constants as hub_constants

    raise InputError(f"{text}: no such file or folder, and the Hub dataset {name!r} is not cached here "
                     f"({datasets.config.HF_DATASETS_CACHE}, {hub_constants.HF_HUB_CACHE}) while {why_offline}: "
                     f"download it where there is network (hf download {name} --repo-type dataset --local-dir "
                     "DIR) and pass --input DIR, or copy that machine's Hugging Face cache here")


@functools.lru_cache(maxsize=8)
def load_repo_folder(text: str, split: str | None) -> Any:
    """The split of a local dataset repository folder (``DIR`` or ``DIR:SUBSET``), via load_dataset."""
    folder, subset = split_subset(text)
    return _load(text, folder, subset, split, offline=True)
