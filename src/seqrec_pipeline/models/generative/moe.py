"""Slot-routed mixture-of-experts decoders without cross-level attention (the reference's ``Qwen3Moe``,
``Qwen3MoeAction``, ``Qwen3SessionMoe``; docs/design.md#moe-variants).

Source: [GAMER-code] ``SeqRec/models/generative/Qwen3Moe``, ``Qwen3MoeAction``, ``Qwen3SessionMoe`` (commit
``00fabd48b15f``), the ablations of [GAMER] without the cross-level layer.  The ``gamer.py`` stack with
sparse FFNs in every layer, behavior injection in the lower half (the reference's ``Qwen3Moe`` config) and no
cross-level attention (``cross_layers`` can switch it on):

- ``qwen3_moe``: one SwiGLU expert per block slot (token t -> expert ``slot[t]``);
- ``gamer_action_moe``: one expert per (behavior, slot), expert ``behavior[t] * block_size + slot[t]``;
- ``qwen3_session_moe``: ``qwen3_moe`` with ``qwen3_session``'s masks and positions.

Deviations: routing comes from the ``slot`` / ``behavior`` tensors, computed once per forward and run as one
grouped GEMM (``experts.py``), instead of a router module that re-parses token ids and keeps them on itself
between generation steps (not re-entrant); pads share expert 0 (never read) instead of owning one.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from .gamer import GamerConfig, GamerForCausalLM


@strict
class Qwen3MoeConfig(GamerConfig):
    model_type = "seqrec_qwen3_moe"
    cross_by_default = False


@strict
class GamerActionMoeConfig(GamerConfig):
    model_type = "seqrec_gamer_action_moe"
    cross_by_default = False

    ffn_experts: str = "behavior_slot"


@strict
class Qwen3SessionMoeConfig(GamerConfig):
    model_type = "seqrec_qwen3_session_moe"
    cross_by_default = False

    session_mask: bool = True


class Qwen3MoeForCausalLM(GamerForCausalLM):
    config_class = Qwen3MoeConfig


class GamerActionMoeForCausalLM(GamerForCausalLM):
    config_class = GamerActionMoeConfig


class Qwen3SessionMoeForCausalLM(GamerForCausalLM):
    config_class = Qwen3SessionMoeConfig
