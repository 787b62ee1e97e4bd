"""mbgen (docs/design.md#mbgen): cached decoding equals teacher forcing, each decoder position uses its own expert,
behavior injection where configured, the shared expert, the config checks, the checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from genmodel_helpers import Batch, make_batch, random_row, tiny_model
from torch.testing import assert_close
from transformers import AutoModelForSeq2SeqLM

from seqrec_pipeline.models.generative import build_config, load_model, loop_expert_ffn, shift_targets_right
from seqrec_pipeline.models.generative.experts import SlotRouting
from seqrec_pipeline.models.generative.mbgen import FFNInputs, MbgenForConditionalGeneration, MbgenLayerFF
from seqrec_pipeline.vocab import EOS, TokenVocab

ATOL = 1e-5


def _targets(vocab: TokenVocab, generator: torch.Generator, behaviors: list[int]) -> dict[str, torch.Tensor]:
    """Decoder inputs of one target block per row: ``[bos, behavior, c_0 .. c_{L-1}]`` and its behavior."""
    target = make_batch([random_row(vocab, 1, generator, behaviors=[b]) for b in behaviors])
    target_ids = torch.cat([target.input_ids, torch.full((len(behaviors), 1), EOS)], dim=1)
    decoder_input_ids = shift_targets_right(target_ids)
    decoder_behavior = torch.tensor(behaviors)[:, None].expand_as(decoder_input_ids).clone()
    return {"decoder_input_ids": decoder_input_ids, "decoder_behavior": decoder_behavior}


def _history(vocab: TokenVocab, generator: torch.Generator, lengths=(2, 4, 1)) -> Batch:
    return make_batch([random_row(vocab, n, generator) for n in lengths], pad_side="left")


@pytest.mark.parametrize("shared_expert", [False, True])
def test_cached_decoding_with_beams_equals_teacher_forced_logits(shared_expert, vocab, generator):
    """The decoding recipe (encode once, <bos> alone, expand to beams, then one token per step with a beam
    reorder in between) gives the logits of one teacher-forced forward."""
    model = tiny_model("mbgen", vocab, shared_expert=shared_expert)
    history = _history(vocab, generator)
    target = _targets(vocab, generator, [3, 0, 1])
    n_beams, n_rows = 2, 3
    with torch.no_grad():
        full = model(**history.inputs(), **target).logits
        encoded = model.encode(history.input_ids, history.attention_mask, history.slot, history.behavior)
        # <bos> alone needs no behavior: the behavior it predicts is not known yet
        out = model(encoder_outputs=encoded, attention_mask=history.attention_mask,
                    decoder_input_ids=target["decoder_input_ids"][:, :1], use_cache=True)  # fmt: skip
        logits, cache = [out.logits.repeat_interleave(n_beams, 0)], out.cache
        cache.batch_repeat_interleave(n_beams)
        encoded.last_hidden_state = encoded.last_hidden_state.repeat_interleave(n_beams, 0)
        encoder_mask = history.attention_mask.repeat_interleave(n_beams, 0)
        swap = torch.arange(n_rows * n_beams).view(n_rows, n_beams).flip(1).reshape(-1)  # beams swap within a row
        for t in range(1, target["decoder_input_ids"].shape[1]):
            step = {key: value[:, t : t + 1].repeat_interleave(n_beams, 0) for key, value in target.items()}
            out = model(encoder_outputs=encoded, attention_mask=encoder_mask, cache=cache, use_cache=True, **step)
            logits.append(out.logits)
            cache = out.cache
            cache.reorder_cache(swap)  # identical beams: the reorder must not change what follows
    assert_close(torch.cat(logits, 1), full.repeat_interleave(n_beams, 0), atol=ATOL, rtol=0)


def test_several_tokens_per_cached_step_equal_teacher_forcing(vocab, generator):
    """The exact scorer feeds the codes of an item in one forward after [<bos>, behavior]: positions (and so
    experts) continue from the cache."""
    model = tiny_model("mbgen", vocab)
    history, target = _history(vocab, generator), _targets(vocab, generator, [2, 3, 0])
    with torch.no_grad():
        full = model(**history.inputs(), **target).logits
        out = model(**history.inputs(), **{k: v[:, :2] for k, v in target.items()}, use_cache=True)
        rest = model(**history.inputs(), **{k: v[:, 2:] for k, v in target.items()}, cache=out.cache,
                     use_cache=True)  # fmt: skip
    assert_close(torch.cat([out.logits, rest.logits], 1), full, atol=ATOL, rtol=0)


def test_decoder_is_causal(vocab, generator):
    model = tiny_model("mbgen", vocab)
    history, target = _history(vocab, generator, (3,)), _targets(vocab, generator, [1])
    with torch.no_grad():
        reference = model(**history.inputs(), **target).logits
        for t in (0, 2, 3):
            changed = dict(target, decoder_input_ids=target["decoder_input_ids"].clone())
            changed["decoder_input_ids"][:, t + 1 :] = (changed["decoder_input_ids"][:, t + 1 :] - 3 + 1) % 18 + 3
            logits = model(**history.inputs(), **changed).logits
            assert_close(logits[:, : t + 1], reference[:, : t + 1], atol=ATOL, rtol=0)
            assert not torch.allclose(logits[:, t + 1 :], reference[:, t + 1 :], atol=1e-3)


def test_each_decoder_position_uses_the_expert_of_its_position(vocab, generator):
    """In the last decoder layer nothing mixes positions after the FFN: changing expert p changes exactly the
    logits of decoder position p (<bos> = 0, behavior token = 1, codes after)."""
    model = tiny_model("mbgen", vocab)
    experts = model.decoder.block[-1].layer[-1].experts
    assert experts.gate_up_proj.shape[0] == vocab.block_size + 1  # one per decoder position
    history, target = _history(vocab, generator), _targets(vocab, generator, [3, 0, 2])
    with torch.no_grad():
        reference = model(**history.inputs(), **target).logits
        for p in range(vocab.block_size + 1):
            saved = experts.down_proj[p].clone()
            experts.down_proj[p] += 0.5 * torch.randn(saved.shape, generator=generator)
            logits = model(**history.inputs(), **target).logits
            experts.down_proj[p] = saved
            others = [q for q in range(vocab.block_size + 1) if q != p]
            assert_close(logits[:, others], reference[:, others], atol=ATOL, rtol=0)
            assert (logits[:, p] - reference[:, p]).abs().amax(-1).min() > 1e-3


def test_behavior_injection_where_configured(vocab, generator):
    history, target = _history(vocab, generator), _targets(vocab, generator, [3, 0, 2])
    other_target = dict(target, decoder_behavior=(target["decoder_behavior"] + 1) % 4)
    other_history = history.inputs()
    other_history["behavior"] = torch.where(history.attention_mask.bool(), (history.behavior + 1) % 4, 0)
    with torch.no_grad():
        model = tiny_model("mbgen", vocab)  # injection: encoder layer 0, decoder layers 0-1
        reference = model(**history.inputs(), **target).logits
        decoder_changed = model(**history.inputs(), **other_target).logits
        # <bos> carries no behavior; every later position carries the target's
        assert_close(decoder_changed[:, 0], reference[:, 0], atol=ATOL, rtol=0)
        assert (decoder_changed[:, 1:] - reference[:, 1:]).abs().amax(-1).min() > 1e-3
        encoder_changed = model(**other_history, **target).logits
        assert (encoder_changed - reference).abs().amax(-1).min() > 1e-3

        plain = tiny_model("mbgen", vocab, encoder_injection_layers=[], decoder_injection_layers=[])
        reference = plain(**history.inputs(), **target).logits
        assert_close(plain(**other_history, **other_target).logits, reference, atol=0, rtol=0)
        without = {k: v for k, v in history.inputs().items() if k not in ("slot", "behavior")}
        assert_close(plain(**without, decoder_input_ids=target["decoder_input_ids"]).logits, reference, atol=0, rtol=0)

    with pytest.raises(ValueError, match="decoder_behavior"):
        model(**history.inputs(), decoder_input_ids=target["decoder_input_ids"])
    with pytest.raises(ValueError, match="slot and behavior"):
        model(input_ids=history.input_ids, attention_mask=history.attention_mask, **target)


def test_injected_behavior_equals_a_concatenated_embedding(vocab, generator):
    """The FFN sub-layer computes FFN([norm(h), E[index]]) with E's row 0 zero, as the reference's concat."""
    config = build_config("mbgen", vocab, d_model=16, d_ff=24, behavior_embed_dim=4)
    torch.manual_seed(0)
    layer = MbgenLayerFF(config, sparse=True, injection=True).eval()
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    with torch.no_grad():
        layer.behavior_embed.weight[0] = 0  # padding_idx row: the "no behavior" input
    h = torch.randn(2, 5, 16, generator=generator)
    position = torch.arange(5).expand(2, 5)
    index = torch.tensor([[0, 1, 1, 1, 1], [0, 4, 4, 4, 4]])
    inputs = FFNInputs(SlotRouting.from_slots(position, 5), SlotRouting.from_slots(torch.zeros_like(position), 1),
                       index)  # fmt: skip
    with torch.no_grad():
        x = torch.cat([layer.layer_norm(h), layer.behavior_embed(index)], dim=-1)
        expected = h + loop_expert_ffn(layer.experts, x, position)
        assert_close(layer(h, inputs), expected, atol=1e-5, rtol=1e-5)


def test_shared_expert_writes_the_second_half_of_the_output(vocab, generator):
    config = build_config("mbgen", vocab, d_model=16, d_ff=24, behavior_embed_dim=4, shared_expert=True)
    torch.manual_seed(0)
    layer = MbgenLayerFF(config, sparse=True, injection=False).eval()
    assert layer.experts.down_proj.shape == (vocab.block_size + 1, 24, 8)
    assert layer.shared_expert.down_proj.shape == (1, 24, 8)
    for parameter in layer.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    h = torch.randn(3, 5, 16, generator=generator)
    position = torch.arange(5).expand(3, 5)
    inputs = FFNInputs(SlotRouting.from_slots(position, 5), SlotRouting.from_slots(torch.zeros_like(position), 1),
                       torch.zeros_like(position))  # fmt: skip
    with torch.no_grad():
        x = layer.layer_norm(h)
        own = loop_expert_ffn(layer.experts, x, position)
        shared = loop_expert_ffn(layer.shared_expert, x, torch.zeros_like(position))
        assert_close(layer(h, inputs), h + torch.cat([own, shared], -1), atol=1e-5, rtol=1e-5)
    # dense layers have no shared expert (as the reference)
    assert MbgenLayerFF(config, sparse=False, injection=False).shared_expert is None


def test_config_checks(vocab):
    with pytest.raises(ValueError, match="even"):
        build_config("mbgen", vocab, d_model=15, shared_expert=True)
    with pytest.raises(ValueError, match="sparse_layers"):
        build_config("mbgen", vocab, sparse_layers=[2])  # cpu-small has 2 decoder layers
    with pytest.raises(ValueError, match="encoder_injection_layers"):
        build_config("mbgen", vocab, encoder_injection_layers=[-1])
    with pytest.raises(ValueError, match="derived"):
        build_config("mbgen", vocab, num_slots=3)
    config = build_config("mbgen", vocab, sparse_layers=None, encoder_injection_layers=None)
    assert config.sparse_layers == [0, 1] and config.encoder_injection_layers == []  # None: all sparse, no injection


def test_save_pretrained_round_trip(vocab, generator, tmp_path):
    model = tiny_model("mbgen", vocab, shared_expert=True)
    history, target = _history(vocab, generator), _targets(vocab, generator, [3, 0, 2])
    model.save_pretrained(tmp_path)
    loaded, auto = load_model(tmp_path).eval(), AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MbgenForConditionalGeneration and type(auto) is MbgenForConditionalGeneration
    _, info = MbgenForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        expected = model(**history.inputs(), **target).logits
        assert_close(loaded(**history.inputs(), **target).logits, expected, atol=0, rtol=0)
        assert_close(auto(**history.inputs(), **target).logits, expected, atol=0, rtol=0)
    assert loaded.encoder.embed_tokens.weight.data_ptr() == loaded.shared.weight.data_ptr()


def test_single_behavior_vocabulary(generator):
    """Blocks of codes only: the decoder has L + 1 positions, every history token is a code token."""
    vocab = TokenVocab(("item",), (5, 6), use_behavior_token=False)
    model = tiny_model("mbgen", vocab)
    assert model.config.num_decoder_experts == 3 and not model.config.predict_behavior
    history = make_batch([random_row(vocab, n, generator, behaviors=[0] * n) for n in (3, 1)], pad_side="left")
    target = _targets(vocab, generator, [0, 0])
    with torch.no_grad():
        full = model(**history.inputs(), **target).logits
        out = model(**history.inputs(), **{k: v[:, :1] for k, v in target.items()}, use_cache=True)
        logits, cache = [out.logits], out.cache
        for t in range(1, target["decoder_input_ids"].shape[1]):
            out = model(**history.inputs(), **{k: v[:, t : t + 1] for k, v in target.items()}, cache=cache,
                        use_cache=True)  # fmt: skip
            logits.append(out.logits)
    assert_close(torch.cat(logits, 1), full, atol=ATOL, rtol=0)
