"""Build generative models by name and size preset; load any of them back from a checkpoint directory.

Presets (``paper``: the reference's configurations, github.com/wzf2000/GAMER):

============ ======================================================= ===================================
model        cpu-small (trains on 2 CPU cores in minutes)            paper
============ ======================================================= ===================================
qwen3        4 layers, hidden 64, 4 (2 KV) heads x 16, FFN 128       8 layers, hidden 256, 6 (3) x 64, FFN 512
gamer        as qwen3 + behavior emb 16, injection 0-1, cross 2-3    as qwen3 + emb 64, injection 0-3, cross 4-7,
                                                                     dropout 0.2 resid / 0.2 attn
tiger        2+2 layers, d_model 64, 4 heads x 16, d_ff 256          4+4 layers, d_model 128, 6 x 64, d_ff 1024
tiger_mb     as tiger (the behavior token is a target too)           as tiger
qwen3_session as qwen3 (dense FFN, session masks)                     as qwen3
gamer_session as gamer                                               as gamer
*_moe        as qwen3 + behavior emb 16, injection 0-1, no cross     as qwen3 + emb 64, injection 0-3, no cross,
                                                                     dropout 0.1 resid / 0.1 attn
mbgen        2+2 layers, d_model 64, 4 x 16, d_ff 128 per expert,   4+4 layers, d_model 256, 6 x 64, d_ff 512,
             sparse decoder 0-1, behavior emb 16, injection enc 0 /  sparse decoder 0-3, emb 64, injection
             dec 0                                                   enc 0-1 / dec 0-1
============ ======================================================= ===================================

``*_moe`` = ``qwen3_moe``, ``gamer_action_moe``, ``qwen3_session_moe`` (the reference's Qwen3Moe config).

Vocabulary-derived fields (vocab size, special ids, slots per block, number of behaviors) always come from
the ``TokenVocab`` and cannot be overridden; any other config field can (``build_model(..., hidden_size=96)``),
plus ``rope_theta`` as a shortcut into ``rope_parameters``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from pathlib import Path
from typing import Any

import numpy as np
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PretrainedConfig, PreTrainedModel

from ...errors import InputError
from ...vocab import BOS, EOS, PAD, TokenVocab
from .gamer import GamerConfig, GamerForCausalLM
from .gamer_session import GamerSessionConfig, GamerSessionForCausalLM
from .mbgen import MbgenConfig, MbgenForConditionalGeneration
from .moe import (
    GamerActionMoeConfig,
    GamerActionMoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
    Qwen3SessionMoeConfig,
    Qwen3SessionMoeForCausalLM,
)
from .qwen3 import Qwen3RecConfig, Qwen3RecForCausalLM
from .qwen3_session import Qwen3SessionConfig, Qwen3SessionForCausalLM
from .tiger import TigerConfig, TigerForConditionalGeneration

MODEL_NAMES: tuple[str, ...] = (
    "qwen3", "tiger", "tiger_mb", "gamer", "qwen3_session", "gamer_session", "qwen3_moe", "gamer_action_moe",
    "qwen3_session_moe", "mbgen",
)
ENCODER_DECODERS: tuple[str, ...] = ("tiger", "tiger_mb", "mbgen")
PRESET_NAMES: tuple[str, ...] = ("cpu-small", "paper")

_DECODER_SMALL = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, attention_dropout=0.1, rope_theta=1e6,
)  # fmt: skip
_DECODER_PAPER = dict(
    hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=6, num_key_value_heads=3,
    head_dim=64, attention_dropout=0.1, rope_theta=1e6,
)  # fmt: skip

_GAMER = {
    "cpu-small": {
        **_DECODER_SMALL, "behavior_embed_dim": 16, "injection_layers": [0, 1], "cross_layers": [2, 3],
        "resid_dropout": 0.1,
    },
    "paper": {
        **_DECODER_PAPER, "behavior_embed_dim": 64, "injection_layers": [0, 1, 2, 3], "cross_layers": [4, 5, 6, 7],
        "resid_dropout": 0.2, "attention_dropout": 0.2,
    },
}
_MOE = {  # the reference's Qwen3Moe / Qwen3ActionMoe configs: sparse FFN everywhere, injection 0-3, no cross
    "cpu-small": {**_DECODER_SMALL, "behavior_embed_dim": 16, "injection_layers": [0, 1], "cross_layers": [],
                  "resid_dropout": 0.1},
    "paper": {**_DECODER_PAPER, "behavior_embed_dim": 64, "injection_layers": [0, 1, 2, 3], "cross_layers": [],
              "resid_dropout": 0.1},
}
_QWEN3 = {"cpu-small": _DECODER_SMALL, "paper": _DECODER_PAPER}

_TIGER = {
    "cpu-small": dict(
        d_model=64, d_kv=16, d_ff=256, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.1,
        relative_attention_num_buckets=32,
    ),
    "paper": dict(
        d_model=128, d_kv=64, d_ff=1024, num_layers=4, num_decoder_layers=4, num_heads=6, dropout_rate=0.1,
        relative_attention_num_buckets=32,
    ),
}  # fmt: skip
_MBGEN = {  # the reference's PBATransformer config: dense encoder, sparse decoder, injection in layers 0-1 of both
    "cpu-small": dict(
        d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, dropout_rate=0.1,
        relative_attention_num_buckets=32, behavior_embed_dim=16, sparse_layers=[0, 1],
        encoder_injection_layers=[0], decoder_injection_layers=[0], shared_expert=False,
    ),
    "paper": dict(
        d_model=256, d_kv=64, d_ff=512, num_layers=4, num_decoder_layers=4, num_heads=6, dropout_rate=0.1,
        relative_attention_num_buckets=32, behavior_embed_dim=64, sparse_layers=[0, 1, 2, 3],
        encoder_injection_layers=[0, 1], decoder_injection_layers=[0, 1], shared_expert=False,
    ),
}  # fmt: skip

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "qwen3": _QWEN3,
    "gamer": _GAMER,
    "qwen3_session": _QWEN3,
    "gamer_session": _GAMER,
    "qwen3_moe": _MOE,
    "gamer_action_moe": _MOE,
    "qwen3_session_moe": _MOE,
    "tiger": _TIGER,
    "tiger_mb": _TIGER,
    "mbgen": _MBGEN,
}  # fmt: skip

CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "qwen3": Qwen3RecConfig, "tiger": TigerConfig, "tiger_mb": TigerConfig, "gamer": GamerConfig,
    "qwen3_session": Qwen3SessionConfig, "gamer_session": GamerSessionConfig, "qwen3_moe": Qwen3MoeConfig, "gamer_action_moe": GamerActionMoeConfig,
    "qwen3_session_moe": Qwen3SessionMoeConfig, "mbgen": MbgenConfig,
}  # fmt: skip
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen3": Qwen3RecForCausalLM, "tiger": TigerForConditionalGeneration,
    "tiger_mb": TigerForConditionalGeneration, "gamer": GamerForCausalLM,
    "qwen3_session": Qwen3SessionForCausalLM, "gamer_session": GamerSessionForCausalLM,
    "qwen3_moe": Qwen3MoeForCausalLM, "gamer_action_moe": GamerActionMoeForCausalLM,
    "qwen3_session_moe": Qwen3SessionMoeForCausalLM, "mbgen": MbgenForConditionalGeneration,
}  # fmt: skip
# Names built on gamer.py's decoder (slot / behavior / level / session metadata, GamerCache).
GAMER_FAMILY: tuple[str, ...] = tuple(n for n, c in CONFIG_CLASSES.items() if issubclass(c, GamerConfig))


def _vocab_fields(name: str, vocab: TokenVocab) -> dict[str, Any]:
    """Config fields that follow from the vocabulary (never overridable)."""
    fields = dict(vocab_size=vocab.size, pad_token_id=PAD, eos_token_id=EOS, vocab=vocab.to_dict())
    if name in ENCODER_DECODERS:
        fields |= {"decoder_start_token_id": BOS, "use_behavior_token": vocab.use_behavior_token,
                   "predict_behavior": name in ("tiger_mb", "mbgen") and vocab.use_behavior_token}
        if name == "mbgen":
            fields |= dict(num_slots=vocab.block_size, num_behaviors=max(1, len(vocab.behaviors)))
        return fields
    fields["bos_token_id"] = BOS
    if name in GAMER_FAMILY:
        fields |= dict(
            num_slots=vocab.block_size,
            num_behaviors=max(1, len(vocab.behaviors)),
            use_behavior_token=vocab.use_behavior_token,
        )
    return fields


# Defaults for every preset (overridable).  use_cache=False: training forwards build no KV cache;
# decoding passes use_cache=True explicitly.
_COMMON_DEFAULTS: dict[str, dict[str, Any]] = {
    "qwen3": {"use_cache": False, "tie_word_embeddings": True},
    "tiger": {"use_cache": False},
    "tiger_mb": {"use_cache": False},
    "mbgen": {"use_cache": False},
} | {name: {"use_cache": False, "tie_word_embeddings": True} for name in GAMER_FAMILY}


def build_config(name: str, vocab: TokenVocab, preset: str = "cpu-small", *, catalog_size: int | None = None,
                 **overrides: Any) -> PretrainedConfig:
    """The config ``build_model`` would use (see the module docstring for presets and overrides); ``catalog_size``
    (the number of items) is needed when the overrides turn on the gamer family's ``item_head`` (``True``, or
    ``"auto"``: on for catalogs of at most ``item_head_max_items`` items, an option of the build, not of the
    model, which ``auto`` needs)."""
    if name not in MODEL_NAMES:
        raise InputError(f"unknown generative model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    if preset not in PRESET_NAMES:
        raise InputError(f"unknown preset {preset!r}; valid: {', '.join(PRESET_NAMES)}")
    config_class = CONFIG_CLASSES[name]
    derived = _vocab_fields(name, vocab)
    fixed = sorted(set(overrides) & (set(derived) | {"n_items"}))
    if fixed:
        raise InputError(f"{fixed} are derived from the TokenVocab or the SID table and cannot be overridden")
    variant = sorted(set(overrides) & {"ffn_experts", "session_mask"}) if name in GAMER_FAMILY else []
    if variant:
        raise InputError(f"{variant} are fixed by the model name {name!r}; choose another model instead")
    known = {field.name for field in dataclasses.fields(config_class)} | {"rope_theta"}
    if "item_head" in known:
        known.add("item_head_max_items")
    unknown = sorted(set(overrides) - known)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise InputError(f"unknown {name} config fields {unknown}{hint}")

    fields = {**_COMMON_DEFAULTS[name], **PRESETS[name][preset], **overrides, **derived}
    max_items = fields.pop("item_head_max_items", None)
    if fields.get("item_head", False) not in (True, False, "auto"):
        raise InputError(f"item_head must be true, false or auto, got {fields['item_head']!r}")
    if fields.get("item_head") == "auto":
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 0:
            raise InputError("item_head: auto needs item_head_max_items, the largest catalog that gets the head "
                             f"(an integer >= 0), got {max_items!r}")
        fields["item_head"] = bool(catalog_size) and catalog_size <= max_items
    if fields.get("item_input", False) not in (True, False, "auto"):
        raise InputError(f"item_input must be true, false or auto, got {fields['item_input']!r}")
    if fields.get("item_input") == "auto":  # with the head, whose rows it reuses
        fields["item_input"] = bool(fields.get("item_head"))
    if fields.get("item_head"):
        if not catalog_size:
            raise InputError(f"{name} with item_head needs the catalog size (build_model(..., catalog_size=n_items))")
        fields["n_items"] = int(catalog_size)
    if "rope_theta" in fields:  # Qwen3 configs take RoPE settings as a dict
        fields["rope_parameters"] = {"rope_type": "default", "rope_theta": float(fields.pop("rope_theta"))}
    try:
        return config_class(**fields)
    except (StrictDataclassClassValidationError, StrictDataclassFieldValidationError, ValueError) as error:
        raise InputError(f"invalid {name} config: {' '.join(str(error).split())}") from error


def check_config(name: str, preset: str, overrides: dict[str, Any]) -> None:
    """Raise :class:`InputError` when ``models.<name>`` overrides do not make a valid config (unknown or fixed fields,
    bad values), before any run: the config is built for a placeholder vocabulary and catalog, which only the
    derived fields read."""
    build_config(name, TokenVocab(("behavior",), (2,)), preset, catalog_size=1, **overrides)


def build_model(name: str, vocab: TokenVocab, preset: str = "cpu-small", *, catalog_size: int | None = None,
                codes: np.ndarray | None = None, **overrides: Any) -> PreTrainedModel:
    """A freshly initialised model ``name`` (one of ``MODEL_NAMES``) for ``vocab``.  ``codes``: the SID table
    ``[n_items, L]``, which an item head needs (its size; ``catalog_size`` alone does for a head without
    ``item_input``) and ``item_input`` looks the history's items up in.

    Raises InputError (a ValueError) for an unknown name, preset or config field.
    """
    if codes is not None:
        catalog_size = len(codes)
    config = build_config(name, vocab, preset, catalog_size=catalog_size, **overrides)
    model = MODEL_CLASSES[name](config)
    if getattr(config, "item_input", False):
        if codes is None:
            raise InputError(f"{name} with item_input needs the SID table (build_model(..., codes=codes))")
        model.set_item_codes(vocab.code_tokens(np.asarray(codes, dtype=np.int64)))
    return model


def model_name_of(config: PretrainedConfig) -> str:
    for name, config_class in CONFIG_CLASSES.items():
        if config.model_type == config_class.model_type:
            if name == "tiger" and getattr(config, "predict_behavior", False):  # tiger_mb shares tiger's class
                return "tiger_mb"
            return name
    raise ValueError(f"not a seqrec generative model config: model_type {config.model_type!r}")


def load_model(path: str | Path, **kwargs: Any) -> PreTrainedModel:
    """Load a checkpoint written by ``save_pretrained`` of any model here (dispatch on its model_type)."""
    model_type = json.loads((Path(path) / "config.json").read_text())["model_type"]
    for name, config_class in CONFIG_CLASSES.items():
        if config_class.model_type == model_type:
            return MODEL_CLASSES[name].from_pretrained(path, **kwargs)
    raise ValueError(f"{path}: model_type {model_type!r} is not one of the seqrec generative models")


def vocab_of(model_or_config: PreTrainedModel | PretrainedConfig) -> TokenVocab:
    """The TokenVocab a model was built for (stored in its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    if not getattr(config, "vocab", None):
        raise ValueError("this config does not record its TokenVocab")
    return TokenVocab.from_dict(config.vocab)


def _register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModelFor*`` load these checkpoints too."""
    for name, config_class in CONFIG_CLASSES.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        auto = AutoModelForSeq2SeqLM if name in ENCODER_DECODERS else AutoModelForCausalLM
        auto.register(config_class, MODEL_CLASSES[name], exist_ok=True)


_register_auto_classes()
