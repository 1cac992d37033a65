"""Model sources: GGUFs split across part packages assemble into one checked file, or fail clearly."""

from __future__ import annotations

import hashlib
import importlib
import sys

import pytest

from tessy.models import ModelNotFound, PartPackages


def make_parts(root, prefix, chunks):
    for number, data in enumerate(chunks, start=1):
        package = root / f"{prefix}{number}"
        (package / "data").mkdir(parents=True)
        (package / "__init__.py").write_text("raise ImportError('part packages are never imported')\n")
        (package / "data" / f"part{number:02d}.bin").write_bytes(data)


@pytest.fixture()
def parts(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)), b"tail"]
    make_parts(tmp_path / "site", "tessytest_part", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    monkeypatch.setenv("TESSY_CACHE", str(tmp_path / "cache"))
    whole = b"".join(chunks)
    yield PartPackages("tessytest_part", 3, "1.0", len(whole), hashlib.sha256(whole).hexdigest()), whole
    for name in [name for name in sys.modules if name.startswith("tessytest_part")]:
        del sys.modules[name]


def test_parts_assemble_in_order_into_the_cache_once(parts):
    spec, whole = parts
    path = spec.assemble("tiny")
    assert path.read_bytes() == whole
    assert not any(name.startswith("tessytest_part") for name in sys.modules)  # found, not imported
    mtime = path.stat().st_mtime_ns
    assert spec.assemble("tiny") == path and path.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert [p.name for p in path.parent.iterdir()] == ["tiny.gguf"]  # no staging file left


def test_a_wrong_hash_is_refused_and_leaves_nothing(parts):
    spec, whole = parts
    bad = PartPackages(spec.prefix, spec.count, spec.version, spec.size, "0" * 64)
    with pytest.raises(ModelNotFound, match="do not assemble into the expected GGUF"):
        bad.assemble("tiny")
    folder = spec.chunk_paths()[0].parents[3] / "cache" / "gguf"
    assert list(folder.iterdir()) == []


def test_a_missing_part_is_named_with_the_install_command(parts):
    spec, _ = parts
    more = PartPackages(spec.prefix, 4, spec.version, spec.size, spec.sha256)
    with pytest.raises(ModelNotFound, match=r"tessytest_part4 is not installed; run: make install"):
        more.assemble("tiny")
