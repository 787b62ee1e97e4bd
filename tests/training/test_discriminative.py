"""Sample construction, ranking and a tiny fit of the discriminative training module (no Kedro)."""

import numpy as np
import polars as pl
import pytest
import torch

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.discriminative import build_discriminative
from seqrec_pipeline.ranking import rank_discriminative, validation_metric
from seqrec_pipeline.ranking.discriminative import eval_tensors
from seqrec_pipeline.splits import eval_set
from seqrec_pipeline.training.discriminative import (
    fit_discriminative,
    length_bucketed_batches,
    sequence_samples,
    training_samples,
)


def _sequences() -> pl.DataFrame:
    # user 0: 8 events in sessions [0,0,1,1,1,2,3,3]; last_session valid = 5 (session 2), test = 6 (session 3)
    #         last_event valid = 6, test = 7
    # user 1: 3 events in one session: last_event valid = 1, test = 2; not in last_session
    # user 2: 2 events: in neither protocol
    rows = [
        (0, [10, 11, 12, 13, 14, 15, 16, 17], [0, 1, 0, 2, 0, 1, 0, 2], [0, 0, 1, 1, 1, 2, 3, 3], 5, 6, 6, 7),
        (1, [20, 21, 22], [0, 0, 2], [0, 0, 0], -1, -1, 1, 2),
        (2, [30, 31], [0, 0], [0, 0], -1, -1, -1, -1),
    ]
    return pl.DataFrame(
        {"user_idx": [r[0] for r in rows], "item": [r[1] for r in rows], "behavior": [r[2] for r in rows],
         "session": [r[3] for r in rows], "n_events": [len(r[1]) for r in rows],
         "last_session_valid": [r[4] for r in rows], "last_session_test": [r[5] for r in rows],
         "last_event_valid": [r[6] for r in rows], "last_event_test": [r[7] for r in rows]},
        schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8), "session": pl.List(pl.Int32)},
    )


def _rows(s):
    return [(int(u), int(p), s.items[i][s.items[i] > 0].tolist(), s.behaviors[i][s.behaviors[i] > 0].tolist(),
             int(t), int(b))
            for i, (u, p, t, b) in enumerate(zip(s.user_idx, s.position, s.target_item, s.target_behavior))]


def test_last_session_samples_see_only_earlier_sessions():
    s = training_samples(_sequences(), "last_session", max_history=50)
    # targets: positions 2, 3, 4 (session 1) only: session 0 has no history, 5.. is valid/test
    assert _rows(s) == [
        (0, 2, [11, 12], [1, 2], 12, 0),
        (0, 3, [11, 12], [1, 2], 13, 2),
        (0, 4, [11, 12], [1, 2], 14, 0),
    ]
    assert s.items.shape == (3, 50) and (s.items[:, -2:] > 0).all() and (s.items[:, :-2] == 0).all()  # right-aligned


def test_last_event_samples_and_truncation():
    s = training_samples(_sequences(), "last_event", max_history=2)
    assert _rows(s) == [
        (0, 1, [11], [1], 11, 1),
        (0, 2, [11, 12], [1, 2], 12, 0),
        (0, 3, [12, 13], [2, 1], 13, 2),
        (0, 4, [13, 14], [1, 3], 14, 0),
        (0, 5, [14, 15], [3, 1], 15, 1),
    ]
    # user 1's first training event (position 0) has no history; its valid/test events never appear
    assert s.items.shape == (5, 2) and s.items[0].tolist() == [0, 11]
    seq = _sequences()
    for u, p, *_ in _rows(s):
        assert p < seq["last_event_valid"][u]
    with pytest.raises(InputError):
        training_samples(seq, "nope", 5)


def test_rank_and_fit_on_a_tiny_catalog():
    seq = _sequences()
    model = build_discriminative("sasrec", n_items=40, n_behaviors=3, max_len=5, default_target_behavior=2)
    data = eval_set(seq, "last_event", "test", 5)
    top = rank_discriminative(model, data, top_k=10, batch_size=1).items
    assert top.shape == (len(data.targets), 10)
    assert all(len(set(r)) == 10 and r.min() >= 0 and r.max() < 40 for r in top)
    seen = []
    summary = fit_discriminative(model, training_samples(seq, "last_event", 5),
                                 validation_metric(seq, "last_event", 5, target_behavior=1),
                                 epochs=3, batch_size=2, patience=5, device="cpu", progress=False,
                                 on_epoch=lambda e, m: seen.append((e, m)))
    assert [e for e, _ in seen] == [1, 2, 3] and "valid/ndcg@10" in seen[0][1]
    assert 1 <= summary["best_epoch"] <= 3 and np.isfinite(summary["history"][-1]["train/loss"])
    # the best epoch is the first one with the highest validation NDCG@10, and its value is reported
    ndcg = [h["valid/ndcg@10"] for h in summary["history"]]
    assert summary["best_epoch"] == 1 + ndcg.index(max(ndcg)) and summary["best_value"] == max(ndcg)


def test_ranking_requests_each_samples_behavior_from_a_behavior_variant():
    """rank_discriminative scores every (user, behavior) sample with that behavior as the requested one, so a
    _behavior model's lists are those of ``score(history, behaviors, sample behavior)``."""
    seq = _sequences()
    torch.manual_seed(0)
    model = build_discriminative("sasrec_behavior", n_items=40, n_behaviors=3, max_len=5).eval()
    data = eval_set(seq, "last_event", "test", 5)
    assert data.sample_behavior.tolist() == [2, 2]  # both test events are of behavior 2
    ranking = rank_discriminative(model, data, top_k=40, batch_size=1)
    items, behaviors = eval_tensors(data, 5)
    rows = torch.from_numpy(data.sample_user.astype(np.int64))
    with torch.no_grad():
        for b, should_match in ((2, True), (0, False)):
            expected = model.score(items[rows], behaviors[rows], torch.full((len(rows),), b)).log_softmax(-1)
            same = np.allclose(ranking.scores, expected.sort(-1, descending=True).values.numpy(), atol=1e-5)
            assert same == should_match


def test_sequence_windows_cover_each_training_target_once():
    s = sequence_samples(_sequences(), "last_event", max_history=2)
    # user 0 training prefix = items 10..15 (valid = 6): windows of 3 events, newest first, targets 11..15
    # user 1 has one training event (no target); user 2 is outside the protocol
    assert s.items.tolist() == [[14, 15, 16], [12, 13, 14], [0, 11, 12]]  # item + 1, right-aligned
    assert s.behaviors.tolist() == [[3, 1, 2], [2, 1, 3], [0, 1, 2]]
    targets = sorted(int(row[t]) - 1 for row in s.items for t in range(1, row.shape[0]) if row[t - 1] > 0)
    assert targets == [11, 12, 13, 14, 15]  # each training event i >= 1 exactly once, no valid/test event


@pytest.mark.parametrize("name", ["sasrec", "gru4rec", "sasrec_behavior", "gru4rec_behavior"])
def test_sequence_loss_equals_the_per_sample_loss_of_every_prefix(name):
    """Per-position training is the same objective as one sample per target with its window as history (for the
    _behavior variants: with its behaviors, the target's behavior requested)."""
    torch.manual_seed(0)
    model = build_discriminative(name, n_items=40, n_behaviors=3, max_len=4).eval()
    windows = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5]])
    behaviors = torch.tensor([[0, 0, 1, 3, 2], [2, 1, 3, 3, 1]])
    losses = []
    for row, row_behaviors in zip(windows, behaviors):
        for t in range(1, 5):
            if row[t - 1] == 0:
                continue
            pad = torch.zeros(4 - t, dtype=torch.long)
            history = torch.cat([pad, row[:t]])[None]
            history_behaviors = torch.cat([pad, row_behaviors[:t]])[None]
            logits = model.score(history, history_behaviors, row_behaviors[t:t + 1] - 1)
            losses.append(torch.nn.functional.cross_entropy(logits, row[t:t + 1] - 1))
    with torch.no_grad():
        loss = model.sequence_loss(windows, behaviors)
        assert loss.item() == pytest.approx(torch.stack(losses).mean().item(), rel=1e-5)
        if model.embeds_behaviors:  # a _behavior variant reads the behaviors of the window (and of its targets)
            assert model.sequence_loss(windows, behaviors % 3 + 1).item() != pytest.approx(loss.item(), rel=1e-5)
        else:
            assert model.sequence_loss(windows).item() == pytest.approx(loss.item(), rel=1e-5)


@pytest.mark.parametrize("name", ["bert4rec", "mbht", "mbstr", "pbat", "bert4rec_behavior"])
def test_cloze_window_loss_equals_the_appended_target_loss(name):
    """A window's newest event plays the appended target: same sequence, same mask draw, same loss."""
    torch.manual_seed(0)
    model = build_discriminative(name, n_items=40, n_behaviors=3, max_len=4).eval()
    windows = torch.tensor([[0, 0, 3, 7, 9], [1, 2, 3, 4, 5], [6, 6, 6, 6, 6]])
    behaviors = torch.tensor([[0, 0, 1, 2, 3], [1, 1, 2, 1, 3], [1, 2, 1, 2, 2]])
    event_batch = {"items": windows[:, :-1], "behaviors": behaviors[:, :-1],
                   "target_item": windows[:, -1] - 1, "target_behavior": behaviors[:, -1] - 1}
    with torch.no_grad():
        window_loss = model.sequence_loss(windows, behaviors, torch.Generator().manual_seed(3))
        event_loss = model.loss(event_batch, torch.Generator().manual_seed(3))
        other_draw = model.sequence_loss(windows, behaviors, torch.Generator().manual_seed(4))
    assert torch.isfinite(window_loss) and window_loss.item() == pytest.approx(event_loss.item(), rel=1e-6)
    assert other_draw.item() != pytest.approx(window_loss.item(), rel=1e-6)  # the mask is random
    # windows longer than max_len + 1 keep their newest max_len + 1 events
    longer = torch.cat([torch.tensor([[0, 0], [11, 12], [13, 13]]), windows], dim=1)
    with torch.no_grad():
        assert model.sequence_loss(longer, torch.cat([torch.ones(3, 2, dtype=torch.long), behaviors], 1),
                                   torch.Generator().manual_seed(3)).item() == pytest.approx(window_loss.item(), rel=1e-6)


def test_length_bucketed_batches_cover_every_row_once_and_group_similar_lengths():
    lengths = torch.randint(1, 51, (1000,), generator=torch.Generator().manual_seed(0))
    batches = length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(1), bucket=8)
    assert sorted(torch.cat(batches).tolist()) == list(range(1000))
    assert max(len(b) for b in batches) == 32
    spread = np.mean([int(lengths[b].max() - lengths[b].min()) for b in batches])
    assert spread < 10  # sorted within runs of 8 batches: a batch spans ~50/8 lengths, not ~50
    again = length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(1), bucket=8)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))  # seeded


def test_batches_drop_leading_padding_columns_without_changing_the_loss():
    s = training_samples(_sequences(), "last_event", max_history=10)
    idx = torch.tensor([0, 1])
    batch = s.batch(idx)
    assert batch["items"].shape[1] == int(s.lengths[idx].max()) < s.items.shape[1]
    model = build_discriminative("sasrec", n_items=40, n_behaviors=3, max_len=10).eval()
    full = {"items": s.items[idx], "behaviors": s.behaviors[idx], "target_item": s.target_item[idx],
            "target_behavior": s.target_behavior[idx]}
    with torch.no_grad():
        assert model.loss(batch).item() == pytest.approx(model.loss(full).item(), rel=1e-5)
    windows = sequence_samples(_sequences(), "last_event", max_history=10)
    assert windows.batch(torch.tensor([0]))["sequence_items"].tolist() == [[11, 12, 13, 14, 15, 16]]


def test_early_stopping_waits_for_min_epochs():
    """A constant validation metric stops after `patience` epochs, but not before `min_epochs`."""
    seq = _sequences()
    samples = training_samples(seq, "last_event", 5)
    runs = {}
    for min_epochs in (0, 4):
        model = build_discriminative("sasrec", n_items=40, n_behaviors=3, max_len=5)
        summary = fit_discriminative(model, samples, lambda m: {"valid/ndcg@10": 0.5}, epochs=6, batch_size=2,
                                     patience=1, min_epochs=min_epochs, device="cpu", progress=False)
        runs[min_epochs] = summary["epochs_run"]
        assert summary["best_epoch"] == 1
    assert runs == {0: 2, 4: 4}
