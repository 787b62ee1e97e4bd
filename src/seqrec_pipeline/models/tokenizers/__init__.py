"""Semantic-ID tokenizers (docs/design.md#tokenizers): items -> int ``codes[n_items, L]``.

| method     | function                                    | level sizes of the table            |
|------------|---------------------------------------------|-------------------------------------|
| `rqkmeans` | ``rqkmeans(emb, n_levels, codebook_size)``  | ``result.level_sizes``              |
| `rqvae`    | ``train_rqvae(emb, config)`` then ``.model.encode(emb)`` | ``config.codebook_sizes`` |
| `cid`      | ``cid(n_items, base)``                      | ``(base,) * codes.shape[1]``        |
| `rid`      | ``rid(n_items, level_sizes)``               | ``level_sizes``                     |
| `given`    | ``parse_index(index_json, item_ids)``       | inferred (``max + 1`` per level)    |

Then ``resolve_collisions(codes, level_sizes)`` returns the final bijective table (one
extra level only if some items share a code) and the statistics to log.
"""

from seqrec_pipeline.models.tokenizers.collisions import (
    check_bijection,
    collision_rate,
    infer_level_sizes,
    is_bijection,
    level_stats,
    resolve_collisions,
)
from seqrec_pipeline.models.tokenizers.rqkmeans import RQKMeansResult, check_finite, rqkmeans, spread_last_level
from seqrec_pipeline.models.tokenizers.rqvae import (
    RQVAE,
    RQVAEConfig,
    RQVAETrainResult,
    load_rqvae,
    save_rqvae,
    train_rqvae,
)
from seqrec_pipeline.models.tokenizers.simple import cid, parse_index, rid

__all__ = [
    "RQKMeansResult",
    "RQVAE",
    "RQVAEConfig",
    "RQVAETrainResult",
    "check_bijection",
    "check_finite",
    "cid",
    "collision_rate",
    "infer_level_sizes",
    "is_bijection",
    "level_stats",
    "load_rqvae",
    "parse_index",
    "resolve_collisions",
    "rid",
    "rqkmeans",
    "save_rqvae",
    "spread_last_level",
    "train_rqvae",
]
