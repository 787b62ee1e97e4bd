"""The batched slot-expert FFN equals the reference's per-expert loop, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from seqrec_pipeline.models.generative import SlotExpertFFN, SlotRouting, loop_expert_ffn
from seqrec_pipeline.models.generative.experts import grouped_mm_supported


def _ffn(impl: str, num_slots: int = 5, d_in: int = 24, d_ff: int = 32, d_out: int = 16) -> SlotExpertFFN:
    torch.manual_seed(0)
    ffn = SlotExpertFFN(num_slots, d_in, d_ff, d_out, impl=impl)
    torch.nn.init.normal_(ffn.gate_up_proj, std=0.2)
    torch.nn.init.normal_(ffn.down_proj, std=0.2)
    return ffn


@pytest.mark.parametrize("impl", ["grouped_mm", "bmm", "auto"])
def test_batched_experts_equal_the_loop(impl, generator):
    if impl == "grouped_mm" and not grouped_mm_supported(torch.zeros(1, 24), torch.zeros(5, 24, 64)):
        pytest.skip("torch.nn.functional.grouped_mm is not available in this torch build")
    ffn = _ffn(impl)
    # Unsorted, unaligned slots (as in left-padded prompts or decode steps); slot 3 has no token at all.
    slot = torch.tensor([[0, 4, 4, 1, 2, 0, 1], [2, 2, 0, 4, 1, 0, 4]])
    x = torch.randn(2, 7, 24, generator=generator, requires_grad=True)

    batched = ffn(x, SlotRouting.from_slots(slot, 5))
    grads = torch.autograd.grad(batched.square().sum(), [x, ffn.gate_up_proj, ffn.down_proj])
    looped = loop_expert_ffn(ffn, x, slot)
    loop_grads = torch.autograd.grad(looped.square().sum(), [x, ffn.gate_up_proj, ffn.down_proj])

    assert batched.shape == (2, 7, 16)
    assert_close(batched, looped, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grads, loop_grads):
        assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(grads[1][3], torch.zeros_like(grads[1][3]))  # the unused expert gets no gradient


def test_each_token_uses_the_expert_of_its_slot(generator):
    ffn = _ffn("auto", num_slots=3)
    x = torch.randn(1, 6, 24, generator=generator)
    slot = torch.tensor([[0, 1, 2, 0, 1, 2]])
    with torch.no_grad():
        out = ffn(x, SlotRouting.from_slots(slot, 3))
        ffn.gate_up_proj[1].zero_()  # silence expert 1 only
        silenced = ffn(x, SlotRouting.from_slots(slot, 3))
    is_one = slot[0] == 1
    assert torch.equal(silenced[0, is_one], torch.zeros_like(silenced[0, is_one]))
    assert torch.equal(silenced[0, ~is_one], out[0, ~is_one])


@pytest.mark.parametrize("impl", ["bmm", "auto"])
def test_ungated_experts_are_t5_feed_forwards(impl, generator):
    """``gated=False`` (mbgen): expert p computes T5's ``wo(relu(wi(x)))`` with ``wi = gate_up_proj[p]``."""
    torch.manual_seed(0)
    ffn = SlotExpertFFN(3, 24, 32, 16, hidden_act="relu", impl=impl, gated=False)
    assert ffn.gate_up_proj.shape == (3, 24, 32)
    torch.nn.init.normal_(ffn.gate_up_proj, std=0.2)
    torch.nn.init.normal_(ffn.down_proj, std=0.2)
    slot = torch.tensor([[2, 0, 1, 2, 2], [1, 1, 0, 0, 2]])
    x = torch.randn(2, 5, 24, generator=generator)
    with torch.no_grad():
        out = ffn(x, SlotRouting.from_slots(slot, 3))
        expected = torch.stack([torch.relu(x[b, t] @ ffn.gate_up_proj[slot[b, t]]) @ ffn.down_proj[slot[b, t]]
                                for b in range(2) for t in range(5)]).view(2, 5, 16)  # fmt: skip
        assert_close(out, expected, atol=1e-5, rtol=1e-5)
        assert_close(loop_expert_ffn(ffn, x, slot), expected, atol=1e-5, rtol=1e-5)


def test_bfloat16_grouped_path_is_close_to_the_loop(generator):
    ffn = _ffn("auto", d_in=32, d_ff=32, d_out=16).to(torch.bfloat16)
    slot = torch.randint(5, (3, 11), generator=generator)
    x = torch.randn(3, 11, 32, generator=generator).to(torch.bfloat16)
    with torch.no_grad():
        assert_close(ffn(x, SlotRouting.from_slots(slot, 5)), loop_expert_ffn(ffn, x, slot), atol=2e-2, rtol=2e-2)


def test_routing_offsets_and_out_of_range_slots():
    routing = SlotRouting.from_slots(torch.tensor([[3, 0, 3, 1]]), num_slots=4)
    assert routing.offsets.tolist() == [1, 2, 2, 4]
    assert routing.offsets.dtype == torch.int32
    assert torch.equal(routing.unsort(routing.sort(torch.arange(4.0)[:, None])), torch.arange(4.0)[:, None])
    with pytest.raises(RuntimeError):
        SlotRouting.from_slots(torch.tensor([[0, 4]]), num_slots=4)


@pytest.mark.parametrize("impl", ["grouped_mm", "bmm"])
def test_injected_embedding_lookup_equals_the_concatenated_input(impl, generator):
    """GAMER's injection: FFN([h, E[b]]) computed as h @ W_h + (E @ W_e)[slot, b] equals the loop on the concat."""
    if impl == "grouped_mm" and not grouped_mm_supported(torch.zeros(1, 16), torch.zeros(5, 16, 64)):
        pytest.skip("torch.nn.functional.grouped_mm is not available in this torch build")
    ffn = _ffn(impl, d_in=24)  # 16 hidden + 8 embedding columns
    table = torch.randn(4, 8, generator=generator, requires_grad=True)
    slot = torch.tensor([[0, 4, 4, 1, 2, 0, 1], [2, 2, 0, 4, 1, 0, 4]])
    index = torch.tensor([[0, 3, 1, 2, 2, 0, 1], [1, 1, 3, 0, 2, 0, 3]])
    h = torch.randn(2, 7, 16, generator=generator, requires_grad=True)

    got = ffn(h, SlotRouting.from_slots(slot, 5), table, index)
    expected = loop_expert_ffn(ffn, torch.cat([h, table[index]], dim=-1), slot)
    assert_close(got, expected, atol=1e-5, rtol=1e-5)
    params = [h, table, ffn.gate_up_proj, ffn.down_proj]
    for g, e in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(expected.sum(), params)):
        assert_close(g, e, atol=1e-5, rtol=1e-5)
