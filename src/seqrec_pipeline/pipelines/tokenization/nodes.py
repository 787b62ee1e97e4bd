"""Tokenization node: item vectors -> bijective semantic-ID table + token vocabulary."""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import polars as pl

from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.models.tokenizers.build import PARAMS, build_sid
from seqrec_pipeline.params import GivenParams, validate
from seqrec_pipeline.vocab import TokenVocab

log = logging.getLogger(__name__)


def _log_epoch(epoch: int, metrics: dict) -> None:
    if mlflow.active_run() is not None:
        mlflow.log_metrics({f"tokenizer/{k}": float(v) for k, v in metrics.items()}, step=epoch)


def tokenize(item_embeddings: np.ndarray, items: pl.DataFrame, behaviors: pl.DataFrame, tokenizer: str,
             tokenizers: dict, seed: int, dataset: str, datasets: dict):
    spec = resolve_dataset(dataset, datasets)
    raw = dict((tokenizers or {}).get(tokenizer) or {})
    params = validate(PARAMS[tokenizer], raw, prefix=f"tokenizers.{tokenizer}.") if tokenizer in PARAMS else raw
    given_file = params.file if isinstance(params, GivenParams) else None
    index_file = spec.raw_dir / (given_file or f"{spec.prefix or spec.name}.index.json")
    sid = build_sid(tokenizer, item_embeddings, items["item_id"].to_list(), params, seed, index_file, _log_epoch)
    table = pl.DataFrame({"item_idx": items["item_idx"]}).with_columns(
        [pl.Series(f"c{level}", sid.codes[:, level], dtype=pl.Int32) for level in range(sid.codes.shape[1])]
    )
    names = behaviors.sort("behavior_idx")["behavior"].to_list()
    vocab = TokenVocab(tuple(names), sid.level_sizes, use_behavior_token=len(names) > 1)
    stats = sid.stats | {"tokenizer_params": {k: v for k, v in raw.items() if k != "file"}, "vocab_size": vocab.size}
    log.info(
        "%s: %d items, %d levels %s, unique before resolution %.4f, largest group %d, disambiguation codes %d",
        tokenizer, len(table), len(sid.level_sizes), list(sid.level_sizes), stats["unique_ratio"],
        stats["max_group_size"], stats["n_disambiguation_codes"],
    )
    if "precision" in stats:  # rqkmeans: "auto" resolves per CPU, so say what ran
        log.info("rqkmeans full-data Lloyd iterations ran in %s; reconstruction error %.5f", stats["precision"],
                 stats["level_mse"][-1])
        if mlflow.active_run() is not None:
            mlflow.set_tag("sid/precision", stats["precision"])
    flat = {"unique_ratio": stats["unique_ratio"], "max_group_size": stats["max_group_size"],
            "n_colliding_items": stats["n_colliding_items"], "n_levels": len(sid.level_sizes),
            "n_disambiguation_codes": stats["n_disambiguation_codes"], "vocab_size": vocab.size}
    flat |= {f"usage_level_{i}": u for i, u in enumerate(stats["usage"])}
    flat |= {f"entropy_level_{i}": e for i, e in enumerate(stats["entropy"])}
    metrics = {f"sid/{k}": {"value": float(v), "step": 0} for k, v in flat.items()}
    return table, vocab.to_dict(), stats, metrics, sid.model
