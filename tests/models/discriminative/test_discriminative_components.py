"""Building blocks checked against hand computations or naive reference implementations."""

from __future__ import annotations

import torch

from seqrec_pipeline.models.discriminative.layers import (
    attention_mask,
    left_align,
    positions_from_start,
    relative_position_bucket,
    right_align,
    undo_left_align,
)
from seqrec_pipeline.models.discriminative import build_discriminative
from seqrec_pipeline.models.discriminative.mbht import SequenceHypergraph, pool_windows
from seqrec_pipeline.models.discriminative.pbat import FusedBehaviorAttention, positive, sagp3


def test_right_align_positions_and_left_align():
    items = torch.tensor([[3, 0, 5, 0], [0, 0, 0, 0], [1, 2, 0, 0]])
    behaviors = torch.tensor([[1, 2, 2, 3], [1, 1, 1, 1], [2, 1, 0, 0]])
    aligned, beh = right_align(items, behaviors)
    assert aligned.tolist() == [[0, 0, 3, 5], [0, 0, 0, 0], [0, 0, 1, 2]]
    assert beh.tolist() == [[0, 0, 1, 2], [0, 0, 0, 0], [0, 0, 2, 1]]  # padding behaviors zeroed
    assert positions_from_start(aligned != 0).tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 1]]
    lengths = (aligned != 0).sum(1)
    left = left_align(aligned, lengths)
    assert left.tolist() == [[3, 5, 0, 0], [0, 0, 0, 0], [1, 2, 0, 0]]
    assert torch.equal(undo_left_align(left, lengths), aligned)


def test_attention_mask_causal_and_padding():
    valid = torch.tensor([[False, True, True]])
    causal = attention_mask(valid, causal=True)[0, 0]
    assert causal.tolist() == [[True, False, False], [False, True, False], [False, True, True]]
    bidirectional = attention_mask(valid, causal=False)[0, 0]
    assert bidirectional.tolist() == [[True, True, True], [False, True, True], [False, True, True]]


def test_relative_position_bucket():
    rel = torch.arange(-60, 61)
    buckets = relative_position_bucket(rel, n_buckets=32, max_distance=40)
    assert buckets.min() >= 0 and buckets.max() < 32
    assert buckets[60] == 0  # distance 0
    # exact buckets for small distances, distinct for the two directions
    assert relative_position_bucket(torch.tensor([1, 2, 3, -1, -2])).tolist() == [17, 18, 19, 1, 2]
    past = buckets[:61].flip(0)  # distances 0, -1, ..., -60
    assert (past.diff() >= 0).all()  # monotone in |distance|
    assert past[40] == past[60] == 15  # saturates at max_distance


def test_pool_windows_anchor_at_the_most_recent_event():
    x = torch.arange(6, dtype=torch.float64)[None, :, None]  # values 0..5
    valid = torch.tensor([[False, True, True, True, True, True]])
    pooled, ok = pool_windows(x, valid, 4)
    # windows from the right: columns 2..5 -> mean 3.5, then column 1 (column 0 is padding)
    assert pooled[0, :, 0].tolist() == [3.5, 1.0] and ok.tolist() == [[True, True]]


def test_hypergraph_propagation_is_row_stochastic_on_events():
    torch.manual_seed(0)
    graph = SequenceHypergraph(hidden=8, hyper_len=2, dropout=0.0).double()
    items = torch.tensor([[0, 0, 3, 5, 3, 7, 9]])
    node = torch.tensor([[False, False, True, True, True, True, False]])  # last column: a [MASK]
    x = torch.randn(1, 7, 8, dtype=torch.float64)
    x[0, 2] = x[0, 4]  # the two events of item 3 share an embedding
    G = graph.propagation(x, items, node)[0]
    torch.testing.assert_close(G.sum(-1)[node[0]], torch.ones(4, dtype=torch.float64))
    assert (G[~node[0]] == 0).all() and (G[:, ~node[0]] == 0).all()
    assert G[2, 4] > 0 and G[4, 2] > 0  # repeated item: multi-behavior hyperedge


def test_pbat_pairwise_distances_match_per_pair_gaussians():
    """The per-behavior fusion equals fusing a query and a key Gaussian for every event pair."""
    torch.manual_seed(0)
    B, S, H, heads, n_beh = 2, 5, 8, 2, 3
    A, d = n_beh + 1, H // heads
    attn = FusedBehaviorAttention(H, heads, dropout=0.0).double()
    r = lambda *shape: torch.randn(*shape, dtype=torch.float64)  # noqa: E731
    q_m, k_m, pos_m = r(B, S, H), r(B, S, H), r(B, S, H)
    q_c, k_c, pos_c = positive(r(B, S, H)), positive(r(B, S, H)), positive(r(B, S, H))
    rel_m, rel_c = r(B, A, A, H), positive(r(B, A, A, H))
    behaviors = torch.tensor([[0, 1, 3, 3, 2], [2, 1, 1, 3, 1]])

    fast = attn.distances(q_m, q_c, k_m, k_c, behaviors, rel_m, rel_c, pos_m, pos_c)

    naive = torch.zeros(B, heads, S, S, dtype=torch.float64)
    with torch.no_grad():
        for b in range(B):
            for i in range(S):
                for j in range(S):
                    pair = behaviors[b, i], behaviors[b, j]
                    Qm, Qc = sagp3(q_m[b, i], q_c[b, i], attn.rel_q(rel_m[b][pair]), rel_c[b][pair],
                                   attn.pos_q(pos_m[b, i]), pos_c[b, i])
                    Km, Kc = sagp3(k_m[b, j], k_c[b, j], attn.rel_k(rel_m[b][pair]), rel_c[b][pair],
                                   attn.pos_k(pos_m[b, j]), pos_c[b, j])
                    w2 = (Qm - Km) ** 2 + (Qc.sqrt() - Kc.sqrt()) ** 2
                    naive[b, :, i, j] = w2.view(heads, d).sum(-1)
    torch.testing.assert_close(fast, naive)


def test_initial_output_heads_are_not_vanishing():
    """MB-STR's expert head starts as the identity (the plain dot-product head), and GRU4Rec's logits start
    at a usable scale: tiny initial logits made both train too slowly to leave popularity on retailrocket."""
    torch.manual_seed(0)
    mbstr = build_discriminative("mbstr", n_items=50, n_behaviors=3, max_len=8)
    rep = torch.randn(16, 64)
    mixed = mbstr.moe_head(rep, torch.randint(0, 3, (16,)))
    assert torch.nn.functional.cosine_similarity(mixed, rep, dim=-1).min() > 0.9
    gru = build_discriminative("gru4rec", n_items=50, n_behaviors=1, max_len=8)
    logits = gru.score(torch.randint(1, 51, (32, 8)))
    assert logits.std() > 0.01
