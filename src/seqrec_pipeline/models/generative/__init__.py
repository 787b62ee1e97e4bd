"""Generative sequential recommenders over semantic-ID tokens (plain PyTorch / transformers, no Kedro).

- ``qwen3``: plain decoder-only baseline (``Qwen3RecForCausalLM``, a thin ``Qwen3ForCausalLM`` subclass);
- ``tiger``: T5 encoder-decoder, history -> target block (``TigerForConditionalGeneration``; ``tiger_mb`` also
  predicts the behavior);
- ``mbgen``: the same encoder-decoder with position-routed sparse decoder FFNs, behavior injection and an
  optional shared expert (``MbgenForConditionalGeneration``, MBGen-style);
- ``gamer``: GAMER's decoder with slot experts, behavior injection and gated cross-level attention
  (``GamerForCausalLM``, cached in a ``GamerCache``);
- the rest of the reference's family, built on the same stack (``GAMER_FAMILY``): ``qwen3_session`` and
  ``gamer_session`` (sessions as unordered item sets: session masks and positions, ``masks.py``), and the
  sparse-FFN models without cross-level attention ``qwen3_moe``, ``gamer_action_moe``, ``qwen3_session_moe``.

``build_model(name, vocab, preset="cpu-small", **overrides)`` builds one, ``load_model(path)`` reloads any
``save_pretrained`` directory.  Every model takes the keyword inputs of ``common.py`` (``input_ids``,
``attention_mask``, ``slot``, ``behavior``, ``level``, ``session``, ``labels``); the gamer family needs the
metadata (the session variants also ``session``), the others ignore it.  Logits are never tempered; ``labels``
give ``CE(logits / config.loss_temperature)``.

Cached decoding (decoder-only; the same calls for ``qwen3`` and ``gamer``)::

    out = model(**prompt, use_cache=True, logits_to_keep=1)   # prompt: left-padded, ends with the
    cache = out.cache                                          # target behavior token (fixed-behavior mode)
    cache.batch_repeat_interleave(k)                           # k beams per prompt: row i -> rows i*k..i*k+k-1
    mask = prompt["attention_mask"].repeat_interleave(k, 0)
    for step in range(n_levels):
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)      # always cached + new tokens
        out = model(input_ids=tokens[:, None], attention_mask=mask, cache=cache, use_cache=True,
                    slot=full(step + 1), behavior=full(b), level=full(level_of_b),   # [B*k, 1] each
                    session=full(target_session))   # session variants: one after the history's last
        ...choose beams; parent[j] = flat row (in 0..B*k-1) that new beam j extends...
        cache.reorder_cache(parent); mask = mask[parent]

``cache`` is updated in place (``out.cache is cache``).  ``reorder_cache`` / ``batch_select_indices`` /
``batch_repeat_interleave`` act on every layer of the cache object; for ``gamer`` that includes the cross-level
K/V and the cached per-position levels, so nothing else needs expanding.  To share one history prefill across
behaviors, ``batch_repeat_interleave(n_behaviors)`` before feeding the behavior tokens (or ``copy.deepcopy``).
``tiger`` / ``mbgen``: run ``enc = model.encode(input_ids, attention_mask, slot, behavior)`` once, then
``model(encoder_outputs=enc, attention_mask=history_mask, decoder_input_ids=[[bos, behavior]],
decoder_behavior=[[b, b]], use_cache=True)`` (``decoder_behavior``: the target's behavior per decoder token, read
by mbgen only); expand ``cache`` as above and
``enc.last_hidden_state`` / ``history_mask`` with ``repeat_interleave(k, 0)``; each step feeds one decoder
token.  (Beams of one prompt share the encoder states, so a reorder within a prompt leaves them as they are.)
"""

from .common import IGNORE_INDEX, METADATA_KEYS, position_ids_from_mask, tempered_cross_entropy
from .experts import SlotExpertFFN, SlotRouting, loop_expert_ffn
from .factory import (
    GAMER_FAMILY,
    MODEL_CLASSES,
    MODEL_NAMES,
    PRESET_NAMES,
    PRESETS,
    build_config,
    build_model,
    check_config,
    load_model,
    model_name_of,
    vocab_of,
)
from .gamer import GamerCache, GamerConfig, GamerForCausalLM, GamerModel, build_attention_masks
from .mbgen import MbgenConfig, MbgenForConditionalGeneration
from .qwen3 import Qwen3RecConfig, Qwen3RecForCausalLM
from .tiger import TigerConfig, TigerForConditionalGeneration, shift_targets_right

__all__ = [
    "GAMER_FAMILY",
    "IGNORE_INDEX",
    "METADATA_KEYS",
    "MODEL_CLASSES",
    "MODEL_NAMES",
    "PRESETS",
    "PRESET_NAMES",
    "GamerCache",
    "GamerConfig",
    "GamerForCausalLM",
    "GamerModel",
    "MbgenConfig",
    "MbgenForConditionalGeneration",
    "Qwen3RecConfig",
    "Qwen3RecForCausalLM",
    "SlotExpertFFN",
    "SlotRouting",
    "TigerConfig",
    "TigerForConditionalGeneration",
    "build_attention_masks",
    "build_config",
    "check_config",
    "build_model",
    "load_model",
    "loop_expert_ffn",
    "model_name_of",
    "position_ids_from_mask",
    "shift_targets_right",
    "tempered_cross_entropy",
    "vocab_of",
]
