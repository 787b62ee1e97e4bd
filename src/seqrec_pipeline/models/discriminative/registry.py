"""Name -> model class registry and the factory used by the training pipeline."""

from __future__ import annotations

import inspect

from ...errors import InputError
from .base import SequentialRecommender, behavior_variant
from .bert4rec import BERT4Rec
from .gru4rec import GRU4Rec
from .mbht import MBHT
from .mbstr import MBSTR
from .pbat import PBAT
from .sasrec import SASRec

_BASELINES = (SASRec, BERT4Rec, GRU4Rec, MBHT, MBSTR, PBAT)
# the "+behavior" baselines: the single-behavior models with behavior inputs
_BEHAVIOR_VARIANTS = tuple(behavior_variant(cls) for cls in (SASRec, BERT4Rec, GRU4Rec))
DISCRIMINATIVE_MODELS: dict[str, type[SequentialRecommender]] = {
    cls.name: cls for cls in _BASELINES + _BEHAVIOR_VARIANTS
}


def _canonical(name: str) -> str:
    """'MB-STR', 'mb_str' and 'MBSTR' all mean 'mbstr' ('SASRec-behavior': 'sasrec_behavior')."""
    return name.lower().replace("-", "").replace("_", "")


_BY_CANONICAL = {_canonical(name): name for name in DISCRIMINATIVE_MODELS}


def check_options(name: str, overrides: dict) -> tuple[str, type, inspect.Signature]:
    """Raise :class:`InputError` for an unknown model or constructor option (``rec.models.<name>``); returns the
    model's registry key, class and constructor signature."""
    key = _BY_CANONICAL.get(_canonical(name))
    if key is None:
        raise InputError(f"unknown discriminative model {name!r}; valid names: {', '.join(DISCRIMINATIVE_MODELS)}")
    cls = DISCRIMINATIVE_MODELS[key]
    signature = inspect.signature(cls.__init__)
    allowed = [p for p in signature.parameters if p not in ("self", "n_items", "n_behaviors", "max_len")]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise InputError(f"unknown option(s) {unknown} for {key}; valid options: {', '.join(allowed)}")
    return key, cls, signature


def build_discriminative(
    name: str, n_items: int, n_behaviors: int, max_len: int, **overrides
) -> SequentialRecommender:
    """Build a baseline with the reference's sizes, overridden by ``overrides``.

    The full set of constructor arguments (defaults included) is stored in ``model.config`` so a
    checkpoint ``{"config": model.config, "state_dict": ...}`` can be rebuilt with
    ``build_discriminative(**config)``.
    """
    key, cls, signature = check_options(name, overrides)
    if isinstance(overrides.get("scales"), list):
        overrides["scales"] = tuple(overrides["scales"])  # YAML gives lists
    model = cls(n_items, n_behaviors, max_len, **overrides)
    bound = signature.bind(None, n_items, n_behaviors, max_len, **overrides)
    bound.apply_defaults()
    config = {k: v for k, v in bound.arguments.items() if k != "self"}
    if isinstance(config.get("scales"), tuple):
        config["scales"] = list(config["scales"])  # JSON/YAML friendly
    model.config = {"name": key, **config}
    return model
