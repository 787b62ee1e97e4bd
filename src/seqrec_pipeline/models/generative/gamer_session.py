"""``gamer_session``: GAMER with session masks (the reference's ``Qwen3SessionMulti``).

Source: [GAMER-code] ``SeqRec/models/generative/Qwen3SessionMulti/model.py`` (commit ``00fabd48b15f``); the
paper [GAMER] describes the non-session model.  ``gamer`` (slot experts, behavior injection, cross-level
attention) with ``qwen3_session``'s self-mask and positions; its cross-level attention lets i see j iff
``session[j] < session[i]`` and ``level[j] < level[i]`` (``masks.py``; docs/design.md#session-models).

Deviations: those of ``gamer`` (rows without a key output zero instead of a uniform average over every
position; no state on modules: the reference stored the cross mask's last row on the model between
generation steps) and of ``qwen3_session`` (blocks from ``slot``).
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict

from .gamer import GamerConfig, GamerForCausalLM


@strict
class GamerSessionConfig(GamerConfig):
    model_type = "seqrec_gamer_session"

    session_mask: bool = True


class GamerSessionForCausalLM(GamerForCausalLM):
    config_class = GamerSessionConfig
