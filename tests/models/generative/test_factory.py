"""build_model: names, presets, overrides, vocabulary-derived fields."""

from __future__ import annotations

import pytest

from seqrec_pipeline import params
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.generative import (
    MODEL_NAMES,
    GamerForCausalLM,
    Qwen3RecForCausalLM,
    TigerForConditionalGeneration,
    build_config,
    build_model,
    model_name_of,
    vocab_of,
)
from seqrec_pipeline.models.generative.gamer_session import GamerSessionForCausalLM
from seqrec_pipeline.models.generative.mbgen import MbgenForConditionalGeneration
from seqrec_pipeline.models.generative.moe import (
    GamerActionMoeForCausalLM,
    Qwen3MoeForCausalLM,
    Qwen3SessionMoeForCausalLM,
)
from seqrec_pipeline.models.generative.qwen3_session import Qwen3SessionForCausalLM

EXPECTED = {
    "qwen3": Qwen3RecForCausalLM, "tiger": TigerForConditionalGeneration, "tiger_mb": TigerForConditionalGeneration,
    "gamer": GamerForCausalLM, "qwen3_session": Qwen3SessionForCausalLM, "gamer_session": GamerSessionForCausalLM,
    "qwen3_moe": Qwen3MoeForCausalLM, "gamer_action_moe": GamerActionMoeForCausalLM,
    "qwen3_session_moe": Qwen3SessionMoeForCausalLM, "mbgen": MbgenForConditionalGeneration,
}  # fmt: skip


def test_model_names_and_classes(vocab):
    assert set(MODEL_NAMES) == set(EXPECTED)
    assert set(params.GENERATIVE_MODELS) == set(MODEL_NAMES)  # what `model=` accepts is what can be built
    expected = EXPECTED
    for name in MODEL_NAMES:
        model = build_model(name, vocab)  # cpu-small by default
        assert type(model) is expected[name]
        assert model_name_of(model.config) == name
        assert vocab_of(model) == vocab
        assert model.get_input_embeddings().num_embeddings == vocab.size
        assert model.config.pad_token_id == 0


def test_unknown_names_presets_and_fields_are_rejected(vocab):
    with pytest.raises(InputError, match="qwen3, tiger, tiger_mb, gamer"):
        build_model("sasrec", vocab)
    with pytest.raises(InputError, match="cpu-small, paper"):
        build_model("gamer", vocab, preset="huge")
    with pytest.raises(InputError, match="hiden_size"):
        build_model("gamer", vocab, hiden_size=32)
    with pytest.raises(InputError, match="vocab_size"):
        build_model("qwen3", vocab, vocab_size=10)
    with pytest.raises(InputError, match="outside"):
        build_model("gamer", vocab, cross_layers=[7])
    with pytest.raises(InputError, match="fixed by the model name"):
        build_model("gamer", vocab, session_mask=True)


def test_variants_of_the_gamer_family(vocab):
    """Each name fixes its FFN routing, masks and (for None layer lists) its injection / cross-level layers."""
    expected = {  # name: (ffn_experts, session_mask, injection, cross) with 4 layers
        "gamer": ("slot", False, [0, 1], [2, 3]),
        "qwen3_session": ("dense", True, [], []),
        "gamer_session": ("slot", True, [0, 1], [2, 3]),
        "qwen3_moe": ("slot", False, [0, 1], []),
        "gamer_action_moe": ("behavior_slot", False, [0, 1], []),
        "qwen3_session_moe": ("slot", True, [0, 1], []),
    }
    for name, (experts, session, injection, cross) in expected.items():
        config = build_config(name, vocab, injection_layers=None, cross_layers=None)
        assert (config.ffn_experts, config.session_mask) == (experts, session), name
        assert (config.injection_layers, config.cross_layers) == (injection, cross), name
    n_experts = build_config("gamer_action_moe", vocab).num_experts
    assert n_experts == len(vocab.behaviors) * vocab.block_size
    assert build_model("qwen3_session", vocab).model.layers[0].mlp.gate_up_proj.shape[0] == 1
    paper = build_config("qwen3_moe", vocab, "paper")  # the reference's Qwen3Moe config
    assert paper.injection_layers == [0, 1, 2, 3] and paper.cross_layers == [] and paper.behavior_embed_dim == 64


def test_paper_presets_follow_the_reference_configs(vocab):
    gamer = build_config("gamer", vocab, "paper")
    assert (gamer.num_hidden_layers, gamer.hidden_size, gamer.intermediate_size) == (8, 256, 512)
    assert (gamer.num_attention_heads, gamer.num_key_value_heads, gamer.head_dim) == (6, 3, 64)
    assert gamer.behavior_embed_dim == 64 and gamer.resid_dropout == 0.2 and gamer.attention_dropout == 0.2
    assert gamer.injection_layers == [0, 1, 2, 3] and gamer.cross_layers == [4, 5, 6, 7]
    assert gamer.num_slots == vocab.block_size and gamer.num_behaviors == len(vocab.behaviors)
    assert gamer.loss_temperature == 0.7 and gamer.tie_word_embeddings

    qwen3 = build_config("qwen3", vocab, "paper")
    assert (qwen3.num_hidden_layers, qwen3.hidden_size, qwen3.intermediate_size) == (8, 256, 512)
    assert (qwen3.num_attention_heads, qwen3.num_key_value_heads, qwen3.head_dim) == (6, 3, 64)

    tiger = build_config("tiger", vocab, "paper")
    assert (tiger.num_layers, tiger.num_decoder_layers, tiger.d_model, tiger.num_heads) == (4, 4, 128, 6)
    assert (tiger.d_kv, tiger.d_ff, tiger.dropout_rate) == (64, 1024, 0.1)
    assert tiger.decoder_start_token_id == 1 and tiger.eos_token_id == 2 and tiger.vocab_size == vocab.size
    tiger_mb = build_config("tiger_mb", vocab, "paper")
    assert tiger_mb.predict_behavior and not tiger.predict_behavior  # the only difference
    assert {k: v for k, v in tiger_mb.to_dict().items() if k != "predict_behavior"} == \
        {k: v for k, v in tiger.to_dict().items() if k != "predict_behavior"}

    # the reference's PBATransformer: Switch-T5 4+4, d_model 256, 6 x 64, experts of 512 (ReLU), dense encoder,
    # sparse decoder layers 0-3, behavior injection (64-d) in encoder and decoder layers 0-1
    mbgen = build_config("mbgen", vocab, "paper")
    assert (mbgen.num_layers, mbgen.num_decoder_layers, mbgen.d_model, mbgen.num_heads) == (4, 4, 256, 6)
    assert (mbgen.d_kv, mbgen.d_ff, mbgen.dropout_rate, mbgen.dense_act_fn) == (64, 512, 0.1, "relu")
    assert mbgen.sparse_layers == [0, 1, 2, 3] and mbgen.behavior_embed_dim == 64 and not mbgen.shared_expert
    assert mbgen.encoder_injection_layers == [0, 1] and mbgen.decoder_injection_layers == [0, 1]
    assert mbgen.num_slots == vocab.block_size and mbgen.num_behaviors == len(vocab.behaviors)
    assert mbgen.predict_behavior and mbgen.decoder_start_token_id == 1 and mbgen.loss_temperature == 0.7
    model = build_model("mbgen", vocab, "paper")
    assert model.decoder.block[0].layer[-1].experts.gate_up_proj.shape == (vocab.block_size + 1, 256 + 64, 512)
    assert model.encoder.block[2].layer[-1].experts.gate_up_proj.shape == (1, 256, 512)  # dense, no injection


def test_overrides_reach_the_config(vocab):
    config = build_config("gamer", vocab, hidden_size=48, rope_theta=1e4, loss_temperature=1.0)
    assert config.hidden_size == 48 and config.loss_temperature == 1.0
    assert config.rope_parameters["rope_theta"] == 1e4
