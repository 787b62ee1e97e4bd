"""Every ranker of the project, with the metrics that score them.

A ranker takes an evaluation set (:class:`seqrec_pipeline.splits.EvalSet`: one sample per (user, behavior)
with its history and targets) and returns a :class:`Ranking`: ``items [n_samples, K]`` (item indices, best
first, -1 = empty slot) and optional ``scores``.  Generative beam search (``generative.py``), the rules
(``rules.py``) and the discriminative models' full-catalog scoring (``discriminative.py``) all return it,
so they are scored by the same metrics (``metrics.py``) and reported by the same code (``reporting``).
"""

from .core import Ranking, top_k_of_scores
from .discriminative import rank_discriminative, validation_metric
from .generative import next_behavior_accuracy, rank_generative, validation_ndcg
from .metrics import behavior_accuracy, metrics_by_behavior, per_sample_metrics, ranking_metrics
from .rules import RULES, rank_rule

__all__ = [
    "RULES",
    "Ranking",
    "behavior_accuracy",
    "metrics_by_behavior",
    "next_behavior_accuracy",
    "per_sample_metrics",
    "rank_discriminative",
    "rank_generative",
    "rank_rule",
    "ranking_metrics",
    "top_k_of_scores",
    "validation_metric",
    "validation_ndcg",
]
