"""Nothing the project loads from data/ can execute code: no pickle-based loader is left in the code or the
catalog (models are safetensors / JSON + .npy, checkpoints are read with ``weights_only=True``)."""

import re

from tests.conftest import REPO

FORBIDDEN = re.compile(r"PickleDataset|pickle\.loads?\(|joblib\.load|weights_only\s*=\s*False|allow_pickle\s*=\s*True")


def test_no_pickle_loader_in_code_or_configuration():
    files = [p for folder in ("src", "conf") for p in (REPO / folder).rglob("*")
             if p.suffix in {".py", ".yml", ".yaml", ".json"}]
    assert len(files) > 20
    hits = [f"{p.relative_to(REPO)}:{n}: {line.strip()}" for p in files
            for n, line in enumerate(p.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert hits == [], hits
