"""Slot-routed expert feed-forward networks (GAMER's "MoE", docs/design.md#slot-experts).

There is no learned router: token t goes to the expert of its block position ``slot[t]`` (behavior token,
code level 1, ..., code level L).  The reference looped over experts in Python with boolean gather/scatter
(kept here as :func:`loop_expert_ffn`, the test oracle and benchmark baseline).  Here all experts run at once:

1. tokens are sorted by slot once per forward (:class:`SlotRouting`, shared by every layer, since the routing
   only depends on ``slot``);
2. each projection is one grouped GEMM over the sorted tokens (``torch.nn.functional.grouped_mm``, the MoE
   kernel: jagged groups, no padding, no host sync), or, where that kernel is unavailable (CUDA fp32/fp16,
   unaligned shapes), one ``bmm`` over a ``[P, capacity, d]`` padded buffer;
3. the outputs are un-sorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN

EXPERT_IMPLS = ("auto", "grouped_mm", "bmm")


@dataclass
class SlotRouting:
    """Token -> expert assignment of one forward pass, computed once and reused by every expert layer."""

    num_slots: int
    order: torch.Tensor  # [N] token indices sorted by slot (stable)
    inverse: torch.Tensor  # [N] position of each token in the sorted order
    offsets: torch.Tensor  # [P] int32 end (exclusive) of each slot's group in the sorted order
    sorted_slots: torch.Tensor  # [N] slot of each sorted token
    _padded_index: torch.Tensor | None = None  # bmm path only: row of each sorted token in [P * capacity]
    _capacity: int = 0

    @classmethod
    def from_slots(cls, slot: torch.Tensor, num_slots: int) -> SlotRouting:
        slot = slot.reshape(-1)
        # Checked on the device, without a host sync (an out-of-range slot would silently skip its token).
        torch._assert_async(((slot >= 0) & (slot < num_slots)).all(), "slot ids must lie in [0, num_slots)")
        order = torch.argsort(slot, stable=True)
        sorted_slots = slot[order]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        # offsets[p] = number of tokens with slot <= p, found by binary search on the sorted slots.
        boundaries = torch.arange(num_slots, device=slot.device, dtype=sorted_slots.dtype)
        offsets = torch.searchsorted(sorted_slots, boundaries, right=True, out_int32=True)
        return cls(num_slots, order, inverse, offsets, sorted_slots)

    # One expert (dense layers): the stable order is the identity, so no gather is needed.
    def sort(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.num_slots == 1 else x.index_select(0, self.order)

    def unsort(self, y: torch.Tensor) -> torch.Tensor:
        return y if self.num_slots == 1 else y.index_select(0, self.inverse)

    def padded_index(self) -> tuple[torch.Tensor, int]:
        """Row of each sorted token in a ``[P * capacity]`` buffer (bmm fallback; one host sync, cached)."""
        if self._padded_index is None:
            starts = torch.cat([self.offsets.new_zeros(1), self.offsets[:-1]]).long()
            counts = self.offsets.long() - starts
            self._capacity = max(int(counts.max()), 1)
            rank = torch.arange(self.sorted_slots.numel(), device=self.order.device) - starts[self.sorted_slots]
            self._padded_index = self.sorted_slots * self._capacity + rank
        return self._padded_index, self._capacity

    def matmul(self, x_sorted: torch.Tensor, weight: torch.Tensor, impl: str = "auto") -> torch.Tensor:
        """``x_sorted[group p] @ weight[p]`` for every slot p. x_sorted [N, d_in], weight [P, d_in, d_out]."""
        x_sorted = x_sorted.to(weight.dtype)  # grouped_mm is not autocast-aware
        if impl == "auto":
            impl = "grouped_mm" if grouped_mm_supported(x_sorted, weight) else "bmm"
        if impl == "grouped_mm":
            return F.grouped_mm(x_sorted, weight, offs=self.offsets)
        if impl != "bmm":
            raise ValueError(f"unknown expert implementation {impl!r}; valid: {EXPERT_IMPLS}")
        index, capacity = self.padded_index()
        buffer = x_sorted.new_zeros(self.num_slots * capacity, x_sorted.shape[-1]).index_copy(0, index, x_sorted)
        out = torch.bmm(buffer.view(self.num_slots, capacity, -1), weight)
        return out.view(self.num_slots * capacity, -1).index_select(0, index)


def grouped_mm_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``F.grouped_mm`` has a kernel for these operands (CPU: any float dtype; CUDA: bf16 on sm80+)."""
    if not hasattr(F, "grouped_mm"):
        return False
    # The kernels need 16-byte aligned row strides.
    elements_per_16_bytes = 16 // x.element_size()
    if x.shape[-1] % elements_per_16_bytes or weight.shape[-1] % elements_per_16_bytes:
        return False
    if x.device.type == "cpu":
        return True
    if x.device.type == "cuda":
        return x.dtype == torch.bfloat16 and torch.cuda.get_device_capability(x.device) >= (8, 0)
    return False


class SlotExpertFFN(nn.Module):
    """One FFN per block slot; weights stacked as ``gate_up_proj [P, d_in, 2F]``, ``down_proj [P, F, d_out]``.

    ``gated=True``: SwiGLU-style ``act(x W_gate) * (x W_up)`` (the decoder-only models).  ``gated=False``:
    T5's ``act(x W_in)`` with ``gate_up_proj [P, d_in, F]`` (mbgen's T5-style experts).
    """

    def __init__(
        self,
        num_slots: int,
        input_size: int,
        intermediate_size: int,
        output_size: int,
        hidden_act: str = "silu",
        impl: str = "auto",
        gated: bool = True,
    ) -> None:
        super().__init__()
        if impl not in EXPERT_IMPLS:
            raise ValueError(f"unknown expert implementation {impl!r}; valid: {EXPERT_IMPLS}")
        self.num_slots, self.impl, self.gated = num_slots, impl, gated
        self.intermediate_size = intermediate_size
        width = 2 * intermediate_size if gated else intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(num_slots, input_size, width))
        self.down_proj = nn.Parameter(torch.empty(num_slots, intermediate_size, output_size))
        self.act_fn = ACT2FN[hidden_act]

    def forward(
        self,
        x: torch.Tensor,
        routing: SlotRouting,
        extra_table: torch.Tensor | None = None,
        extra_index: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """FFN of ``x`` or, with ``extra_table [V, e]`` and ``extra_index`` (shape of ``x`` minus its last
        dim), of the concatenation ``[x, extra_table[extra_index]]`` (GAMER's behavior injection).

        The concatenated part takes only V values, so its product with each expert's last ``e`` input rows
        is a ``[P, V, 2F]`` table looked up per token instead of ``e`` extra columns in every token's GEMM.
        """
        leading_shape, d = x.shape[:-1], x.shape[-1]
        x_sorted = routing.sort(x.reshape(-1, d))
        gate_up = routing.matmul(x_sorted, self.gate_up_proj[:, :d], self.impl)
        if extra_table is not None:
            table = torch.matmul(extra_table.to(gate_up.dtype), self.gate_up_proj[:, d:].to(gate_up.dtype))
            rows = routing.sorted_slots * table.shape[1] + routing.sort(extra_index.reshape(-1))
            gate_up = gate_up + table.reshape(-1, table.shape[-1]).index_select(0, rows)
        y_sorted = routing.matmul(self._activation(gate_up), self.down_proj, self.impl)
        return routing.unsort(y_sorted).view(*leading_shape, -1)

    def _activation(self, gate_up: torch.Tensor) -> torch.Tensor:
        if not self.gated:
            return self.act_fn(gate_up)
        gate, up = gate_up.chunk(2, dim=-1)
        return self.act_fn(gate) * up

    def extra_repr(self) -> str:
        p, d_in, _ = self.gate_up_proj.shape
        return (f"num_slots={p}, in={d_in}, intermediate={self.intermediate_size}, out={self.down_proj.shape[-1]}, "
                f"gated={self.gated}, impl={self.impl}")


def loop_expert_ffn(ffn: SlotExpertFFN, x: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """The reference's way: a Python loop over experts with boolean gather/scatter (oracle and baseline)."""
    out = x.new_zeros(*x.shape[:-1], ffn.down_proj.shape[-1])
    for p in range(ffn.num_slots):
        selected = slot == p
        if not selected.any():
            continue
        out[selected] = ffn._activation(x[selected] @ ffn.gate_up_proj[p]) @ ffn.down_proj[p]
    return out


def injection_index(
    slot: torch.Tensor, behavior: torch.Tensor, valid: torch.Tensor, use_behavior_token: bool
) -> torch.Tensor:
    """Row of the behavior-injection table per token: ``behavior + 1`` on code tokens, 0 ("none") on behavior
    tokens (slot 0 when the vocabulary has them) and pads, as the reference's ``behavior_index``."""
    first_code_slot = 1 if use_behavior_token else 0
    return torch.where((slot >= first_code_slot) & valid.bool(), behavior + 1, 0)
