"""``qwen3_session``: a decoder over sessions as unordered item sets (the reference's ``Qwen3Session``).

Source: [GAMER-code] ``SeqRec/models/generative/Qwen3Session/model.py`` (github.com/wzf2000/GAMER, commit
``00fabd48b15f``); no paper describes it.  A Qwen3 decoder (the ``gamer.py`` stack with one dense SwiGLU FFN,
no behavior injection, no cross-level attention) whose self-attention lets token i see token j iff ``j <= i``
and j is in i's own item block or in an earlier session, with RoPE positions ``session * block_size + slot``
(``masks.py``; docs/design.md#session-models).

Deviations: item blocks come from ``slot`` (the reference assumed blocks aligned from position 0, which left
padding or a missing behavior token breaks); the generated item's session is passed in, not counted on a
module attribute (the reference kept ``max_extended_session_id`` on the model: not re-entrant).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from .gamer import GamerConfig, GamerForCausalLM


@strict
class Qwen3SessionConfig(GamerConfig):
    model_type = "seqrec_qwen3_session"
    injection_by_default = cross_by_default = False

    ffn_experts: str = "dense"
    session_mask: bool = True


class Qwen3SessionForCausalLM(GamerForCausalLM):
    config_class = Qwen3SessionConfig
