"""No-leak properties: causal models never look ahead; cloze models never see the items they are
asked to predict (the appended target at inference, masked events in training)."""

from __future__ import annotations

import pytest
import torch
from discriminative_testutils import MAX_LEN, N_BEHAVIORS, N_ITEMS, assert_differs, random_batch

from seqrec_pipeline.models.discriminative.layers import next_behaviors

CAUSAL = ["sasrec", "gru4rec", "sasrec_behavior", "gru4rec_behavior"]
CLOZE = ["bert4rec", "mbht", "mbstr", "pbat", "bert4rec_behavior"]


def full_rows(B: int = 4, seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (B, MAX_LEN), generator=g)
    behaviors = torch.randint(1, N_BEHAVIORS + 1, (B, MAX_LEN), generator=g)
    return items, behaviors


@pytest.mark.parametrize("name", CAUSAL)
@pytest.mark.parametrize("t", [0, 3, MAX_LEN - 2])
def test_causal_models_ignore_future_events(name, t, make_model):
    """Position t sees events <= t and (``_behavior`` variants) the behavior of event t + 1, the one it predicts."""
    model = make_model(name).eval()
    items, behaviors = full_rows()
    query = next_behaviors(behaviors, torch.zeros(len(items), dtype=torch.long))
    future, future_behaviors = items.clone(), behaviors.clone()
    future[:, t + 1 :] = future[:, t + 1 :] % N_ITEMS + 1  # every later event replaced
    future_behaviors[:, t + 1 :] = future_behaviors[:, t + 1 :] % N_BEHAVIORS + 1
    future_query = torch.cat([query[:, : t + 1], next_behaviors(future_behaviors, query[:, -1] - 1)[:, t + 1 :]], 1)
    with torch.no_grad():
        hidden = model.encode(items, behaviors, query)
        hidden_future = model.encode(future, future_behaviors, future_query)
        prefix_rep = model(items[:, : t + 1], behaviors[:, : t + 1], query[:, t] - 1)
    torch.testing.assert_close(hidden_future[:, : t + 1], hidden[:, : t + 1])
    assert_differs(hidden[:, t + 1 :], hidden_future[:, t + 1 :])  # the change itself is visible
    # The prediction from a prefix is exactly the state at its last event.
    torch.testing.assert_close(prefix_rep, hidden[:, t])


@pytest.mark.parametrize("name", CLOZE)
def test_cloze_target_never_reaches_the_model(name, make_model, batch):
    """Training rows that mask only the appended target give the inference logits, whatever the
    target item is."""
    model = make_model(name).eval()
    seq_items, seq_behaviors = model.append_target(batch)
    only_target = torch.zeros_like(seq_items, dtype=torch.bool)
    only_target[:, -1] = True
    other = {**batch, "target_item": (batch["target_item"] + 7) % N_ITEMS}
    other_items, _ = model.append_target(other)
    with torch.no_grad():
        logits, labels = model.masked_logits(seq_items, seq_behaviors, only_target)
        logits_other, labels_other = model.masked_logits(other_items, seq_behaviors, only_target)
        inference = model.score(batch["items"], batch["behaviors"], batch["target_behavior"])
    assert torch.equal(labels, batch["target_item"]) and not torch.equal(labels, labels_other)
    torch.testing.assert_close(logits_other, logits)
    torch.testing.assert_close(inference, logits)


@pytest.mark.parametrize("name", CLOZE)
def test_masked_history_items_are_hidden(name, make_model):
    model = make_model(name, mask_ratio=0.5).eval()
    batch = random_batch(B=8, seed=4)
    seq_items, seq_behaviors = model.append_target(batch)
    mask = model.sample_mask(seq_items, torch.Generator().manual_seed(0))
    assert (mask[:, :-1] & (seq_items[:, :-1] > 0)).any(), "test needs masked history events"

    scrambled = seq_items.clone()
    scrambled[mask] = scrambled[mask] % N_ITEMS + 1  # other true items behind the masks
    visible = (seq_items > 0) & ~mask
    changed_visible = seq_items.clone()
    changed_visible[visible] = changed_visible[visible] % N_ITEMS + 1
    with torch.no_grad():
        logits, _ = model.masked_logits(seq_items, seq_behaviors, mask)
        logits_scrambled, labels_scrambled = model.masked_logits(scrambled, seq_behaviors, mask)
        logits_visible, _ = model.masked_logits(changed_visible, seq_behaviors, mask)
    torch.testing.assert_close(logits_scrambled, logits)
    assert_differs(logits, logits_visible)  # ...while visible events do matter
    assert torch.equal(labels_scrambled, scrambled[mask] - 1)


def test_sample_mask_rules(make_model):
    model = make_model("bert4rec", mask_ratio=0.5, ft_ratio=0.5)
    batch = random_batch(B=400, seed=5)
    seq_items, _ = model.append_target(batch)
    mask = model.sample_mask(seq_items, torch.Generator().manual_seed(1))
    history = seq_items[:, :-1] > 0
    assert mask[:, -1].all()  # the target is always predicted
    assert not (mask & (seq_items == 0)).any()  # padding never
    only_target = ~(mask[:, :-1].any(1))
    # ft rows (50%) plus cloze rows that happened to mask no history event
    assert 0.45 < only_target.float().mean() < 0.75
    rate = mask[:, :-1][history & ~only_target[:, None]].float().mean()
    assert 0.45 < rate < 0.65
