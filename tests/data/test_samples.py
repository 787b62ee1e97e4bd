"""Training / validation samples as integer tensors (data/samples.py), checked by hand and by property."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from seqrec_pipeline.data.samples import (
    EpochSampler,
    augment_copies,
    identity_collate,
    make_datasets,
    training_samples,
)
from seqrec_pipeline.splits import BehaviorTable, EventBuffer, training_prefix
from seqrec_pipeline.vocab import TokenVocab

# Behavior index order differs from level order on purpose, so a level/index mix-up shows.
BEHAVIORS = pl.DataFrame({
    "behavior_idx": pl.Series([0, 1, 2], dtype=pl.Int8),
    "behavior": ["cart", "pv", "buy"],
    "level": pl.Series([1, 0, 2], dtype=pl.Int8),
    "is_target": [False, False, True],
})  # fmt: skip
VOCAB = TokenVocab(("cart", "pv", "buy"), (4, 3))  # tokens: 3..5 behaviors, 6..9 level 0, 10..12 level 1
CODES = np.array([[0, 0], [1, 1], [2, 2], [3, 0], [0, 1], [1, 2]])
X = -100


def split_points(sessions: list[int]) -> dict[str, int]:
    """Split points as preprocessing stores them (leave-one-out; second-to-last / last session)."""
    n, n_sessions = len(sessions), sessions[-1] + 1
    valid, test = (n - 2, n - 1) if n >= 3 else (-1, -1)
    points = {"last_event_valid": valid, "last_event_test": test}
    valid, test = (sessions.index(n_sessions - 2), sessions.index(n_sessions - 1)) if n_sessions >= 3 else (-1, -1)
    return points | {"last_session_valid": valid, "last_session_test": test}


def sequences_frame(users: list[tuple[list[int], list[int], list[int]]]) -> pl.DataFrame:
    """(items, behaviors, sessions) per user -> the preprocessing `sequences` table."""
    rows = []
    for user, (items, behaviors, sessions) in enumerate(users):
        rows.append({"user_idx": user, "item": items, "behavior": behaviors, "timestamp": list(range(len(items))),
                     "session": sessions, "n_events": len(items), "n_sessions": sessions[-1] + 1,
                     **split_points(sessions)})  # fmt: skip
    schema = {"user_idx": pl.Int32, "item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
              "timestamp": pl.List(pl.Int64), "session": pl.List(pl.Int32), "n_events": pl.Int32,
              "n_sessions": pl.Int32, "last_event_valid": pl.Int32, "last_event_test": pl.Int32,
              "last_session_valid": pl.Int32, "last_session_test": pl.Int32}  # fmt: skip
    return pl.DataFrame(rows, schema=schema)


# user 0: last_event valid 4 / test 5; last_session valid 4 (session 2) / test 5 (session 3)
# user 1: last_event valid 3 / test 4; last_session valid 1 (session 1) / test 3 (session 2)
TWO_USERS = sequences_frame([
    ([0, 1, 2, 3, 4, 5], [1, 0, 1, 2, 1, 0], [0, 0, 1, 1, 2, 3]),
    ([5, 4, 3, 2, 1], [1, 1, 2, 0, 2], [0, 1, 1, 2, 2]),
])  # fmt: skip


def batch_of(dataset) -> dict[str, torch.Tensor]:
    return dataset.__getitems__(list(range(len(dataset))))


def as_lists(batch: dict[str, torch.Tensor]) -> dict[str, list]:
    return {key: value.tolist() for key, value in batch.items()}


def test_split_points_of_the_hand_example():
    columns = ("last_event_valid", "last_event_test", "last_session_valid", "last_session_test")
    assert TWO_USERS.select(columns).rows() == [(4, 5, 4, 5), (3, 4, 1, 3)]


def test_user_mode_tokens_by_hand():
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", mode="user", max_history=2)
    batch = as_lists(batch_of(train))
    assert all(t.dtype == torch.int64 for t in batch_of(train).values())
    # user 0, training positions 0..3, window = last 3 (history 2 + final): (item1 cart) (item2 pv) (item3 buy)
    # user 1, training positions 0..2: (item5 pv) (item4 pv) (item3 buy)
    assert batch["input_ids"] == [[3, 7, 11, 4, 8, 12, 5, 9, 10], [4, 7, 12, 4, 6, 11, 5, 9, 10]]
    assert batch["labels"] == [[X, 7, 11, X, 8, 12, X, 9, 10], [X, 7, 12, X, 6, 11, X, 9, 10]]
    assert batch["slot"] == [[0, 1, 2] * 3] * 2
    assert batch["behavior"] == [[0, 0, 0, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1, 2, 2, 2]]
    assert batch["level"] == [[1, 1, 1, 0, 0, 0, 2, 2, 2], [0, 0, 0, 0, 0, 0, 2, 2, 2]]
    assert batch["session"] == [[0, 0, 0, 1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1, 1, 1, 1]]
    assert batch["attention_mask"] == [[1] * 9] * 2


def test_item_labels_sit_on_the_first_code_of_every_block_with_loss():
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", mode="user", max_history=2,
                             item_labels=True)
    batch = as_lists(batch_of(train))
    # the same windows as above: user 0 items 1 2 3, user 1 items 5 4 3; the first code follows the behavior token
    assert batch["item_labels"] == [[X, 1, X, X, 2, X, X, 3, X], [X, 5, X, X, 4, X, X, 3, X]]
    event, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", mode="event", max_history=5,
                             item_labels=True)
    assert as_lists(batch_of(event))["item_labels"] == [  # loss on the target only, none on history or pads
        [X, 1, X, X, X, X, X, X, X], [X, X, X, X, X, X, X, 2, X], [X, X, X, X, X, X, X, 3, X]]
    assert "item_labels" not in batch_of(make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event")[0])
    single = TokenVocab(("cart", "pv", "buy"), (4, 3), use_behavior_token=False)
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, single, protocol="last_event", mode="user", max_history=2,
                             item_labels=True)
    assert as_lists(batch_of(train))["item_labels"][0] == [1, X, 2, X, 3, X]  # no behavior token: slot 0
    with pytest.raises(ValueError, match="decoder-only"):
        make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", encoder_decoder=True,
                      item_labels=True)


def test_history_truncation_keeps_the_most_recent_events():
    for max_history, expected_events in ((1, [2, 3]), (2, [1, 2, 3]), (50, [0, 1, 2, 3])):
        samples = training_samples(TWO_USERS, BEHAVIORS, protocol="last_event", mode="user", max_history=max_history)
        window = samples.events.item[samples.context_start[0] : samples.target_stop[0]]
        assert window.tolist() == expected_events  # user 0's items equal their positions
    samples = training_samples(TWO_USERS, BEHAVIORS, protocol="last_event", mode="event", max_history=2)
    contexts = [samples.events.item[a:b].tolist() for a, b in zip(samples.context_start, samples.context_stop)]
    targets = samples.events.item[samples.target_start].tolist()
    # user 0 targets 1..3 with the last 2 events before each; user 1 (items 5 4 3) targets 4, 3
    assert contexts == [[0], [0, 1], [1, 2], [5], [5, 4]] and targets == [1, 2, 3, 4, 3]


def test_event_mode_last_session_history_stops_at_the_session_start():
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", mode="event", max_history=5)
    batch = as_lists(batch_of(train))
    # user 0 training = positions 0..3, sessions 0 0 1 1; user 1 has one training event -> no sample
    assert batch["input_ids"] == [
        [3, 7, 11, 0, 0, 0, 0, 0, 0],  # target 1 (session 0): empty history
        [4, 6, 10, 3, 7, 11, 4, 8, 12],  # target 2 (session 1): history = positions 0, 1
        [4, 6, 10, 3, 7, 11, 5, 9, 10],  # target 3 (session 1): still positions 0, 1, not 2
    ]
    assert batch["labels"] == [
        [X, 7, 11, X, X, X, X, X, X],
        [X, X, X, X, X, X, X, 8, 12],
        [X, X, X, X, X, X, X, 9, 10],
    ]
    assert batch["attention_mask"] == [[1, 1, 1, 0, 0, 0, 0, 0, 0], [1] * 9, [1] * 9]
    assert batch["slot"][0] == [0, 1, 2, 0, 0, 0, 0, 0, 0] and batch["level"][0] == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert batch["session"] == [[0] * 9, [0, 0, 0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 1, 1, 1]]


def test_validation_samples_by_protocol():
    _, valid = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", max_history=2)
    batch = as_lists(batch_of(valid))
    # user 0: target position 4 after positions 2, 3; user 1: both events of session 1 (positions 1, 2)
    # after everything before that session (position 0), not after each other
    assert batch["input_ids"] == [[4, 8, 12, 5, 9, 10, 4, 6, 11], [4, 7, 12, 4, 6, 11, 0, 0, 0],
                                  [4, 7, 12, 5, 9, 10, 0, 0, 0]]  # fmt: skip
    assert batch["labels"] == [[X, X, X, X, X, X, X, 6, 11], [X, X, X, X, 6, 11, X, X, X],
                               [X, X, X, X, 9, 10, X, X, X]]  # fmt: skip
    assert batch["session"][1] == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    _, valid = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", max_history=2)
    batch = as_lists(batch_of(valid))
    # last_event: one target per user, history = the events right before it
    assert batch["input_ids"] == [[4, 8, 12, 5, 9, 10, 4, 6, 11], [4, 6, 11, 5, 9, 10, 3, 8, 12]]
    assert batch["labels"] == [[X, X, X, X, X, X, X, 6, 11], [X, X, X, X, X, X, X, 8, 12]]


def test_single_behavior_blocks_have_no_behavior_token():
    behaviors = pl.DataFrame({"behavior_idx": pl.Series([0], dtype=pl.Int8), "behavior": ["interact"],
                              "level": pl.Series([0], dtype=pl.Int8), "is_target": [True]})  # fmt: skip
    sequences = sequences_frame([([0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 2, 3])])
    vocab = TokenVocab(("interact",), (4, 3), use_behavior_token=False)  # level 0: 4..7, level 1: 8..10
    train, valid = make_datasets(sequences, behaviors, CODES, vocab, protocol="last_event", mode="user")
    batch = as_lists(batch_of(train))
    assert batch["input_ids"] == [[4, 8, 5, 9]] and batch["labels"] == [[4, 8, 5, 9]]
    assert batch["slot"] == [[0, 1, 0, 1]] and batch["behavior"] == [[0, 0, 0, 0]]
    assert as_lists(batch_of(valid))["labels"] == [[X, X, X, X, 6, 10]]


def test_encoder_decoder_batches_for_tiger():
    train, valid = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", mode="event",
                                 max_history=5, encoder_decoder=True)  # fmt: skip
    batch = as_lists(batch_of(train))
    assert batch["input_ids"] == [[0, 0, 0, 0, 0, 0], [4, 6, 10, 3, 7, 11], [4, 6, 10, 3, 7, 11]]
    assert batch["attention_mask"][0] == [0] * 6  # an empty history is one pad block
    # target [behavior, c0, c1, eos]; decoder input = [bos] + target[:-1]; behavior token masked
    assert batch["decoder_input_ids"] == [[1, 3, 7, 11], [1, 4, 8, 12], [1, 5, 9, 10]]
    assert batch["labels"] == [[X, 7, 11, 2], [X, 8, 12, 2], [X, 9, 10, 2]]
    # the target's behavior on every decoder position (behavior token ids 3, 4, 5 = behaviors 0, 1, 2)
    assert batch["decoder_behavior"] == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]
    assert "decoder_input_ids" in batch_of(valid)
    # user mode: the last event of the window is the target, the others the history
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", mode="user",
                             max_history=2, encoder_decoder=True)  # fmt: skip
    batch = as_lists(batch_of(train))
    assert batch["input_ids"][0] == [3, 7, 11, 4, 8, 12] and batch["labels"][0] == [X, 9, 10, 2]


def test_tiger_mb_batches_put_loss_on_the_target_behavior_token():
    plain, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", mode="event",
                             max_history=5, encoder_decoder=True)  # fmt: skip
    mb, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_session", mode="event",
                          max_history=5, encoder_decoder=True, behavior_loss=True)  # fmt: skip
    a, b = as_lists(batch_of(plain)), as_lists(batch_of(mb))
    assert b["labels"] == [[3, 7, 11, 2], [4, 8, 12, 2], [5, 9, 10, 2]]  # the behavior token is a target too
    assert [row[1:] for row in b["labels"]] == [row[1:] for row in a["labels"]]
    assert b["decoder_input_ids"] == a["decoder_input_ids"] and b["input_ids"] == a["input_ids"]


def test_dataset_works_with_a_dataloader_and_single_items():
    train, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="last_event", mode="event", max_history=2)
    loader = DataLoader(train, batch_size=2, sampler=EpochSampler(train, seed=0), collate_fn=identity_collate)
    batches = list(loader)
    assert [len(b["input_ids"]) for b in batches] == [2, 2, 1]
    assert sum(int((b["labels"] != X).sum()) for b in batches) == 2 * len(train)  # 2 codes per target
    one = train[0]  # user 0's target 1 after event 0, unpadded
    assert one["input_ids"].tolist() == [4, 6, 10, 3, 7, 11] and one["labels"].tolist() == [X, X, X, X, 7, 11]


def test_collator_validates_codes():
    with pytest.raises(ValueError, match="codes must be"):
        make_datasets(TWO_USERS, BEHAVIORS, CODES[:, :1], VOCAB, protocol="last_event")
    with pytest.raises(ValueError, match="out of range"):
        make_datasets(TWO_USERS, BEHAVIORS, CODES + 3, VOCAB, protocol="last_event")
    with pytest.raises(ValueError, match="protocol"):
        make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, protocol="random")


# ----------------------------------------------------------------------------------------------------------
# Augmentation
# ----------------------------------------------------------------------------------------------------------

AUG_BEHAVIORS = pl.DataFrame({
    "behavior_idx": pl.Series([0, 1, 2], dtype=pl.Int8), "behavior": ["pv", "cart", "buy"],
    "level": pl.Series([0, 1, 2], dtype=pl.Int8), "is_target": [False, False, True],
})  # fmt: skip


def augmentation_users() -> pl.DataFrame:
    # user 0 trains on 8 pv, 4 cart, 2 buy (then one valid and one test event);
    # user 1 trains on 1 pv + 1 buy
    behaviors0 = [0, 1, 0, 0, 2, 1, 0, 0, 1, 0, 2, 0, 1, 0] + [2, 2]
    user0 = (list(range(16)), behaviors0, list(range(16)))
    user1 = ([20, 21, 22, 23], [0, 2, 0, 2], [0, 1, 2, 3])
    return sequences_frame([user0, user1])


def per_copy(buffer: EventBuffer) -> list[np.ndarray]:
    """Behaviors of each sequence of a buffer."""
    return [buffer.behavior[a:b] for a, b in zip(buffer.offsets[:-1], buffer.offsets[1:])]


def copies_by_user(seed: int, augment: int = 4) -> EventBuffer:
    events = training_prefix(augmentation_users(), "last_event")
    table = BehaviorTable.from_table(AUG_BEHAVIORS)
    level, is_target = table.levels, table.is_target
    return augment_copies(events, level, is_target, augment, np.random.default_rng(seed))


def test_augmentation_drops_the_exact_numbers_per_behavior():
    copies = copies_by_user(seed=0)
    # user 0, copy k = 1..4 (r = k/4): pv loses floor(8 r / 1) = 2k, cart floor(4 r / 2) = floor(k/2), buy 0
    # user 1: pv loses floor(1 r) = 0 for k < 4; copy 4 keeps only the buy -> < 2 events -> discarded
    assert copies.user.tolist() == [0, 1, 0, 1, 0, 1, 0]
    counts = [np.bincount(behaviors, minlength=3).tolist() for behaviors in per_copy(copies)]
    assert [c for c, u in zip(counts, copies.user) if u == 0] == [[6, 4, 2], [4, 3, 2], [2, 3, 2], [0, 2, 2]]
    assert [c for c, u in zip(counts, copies.user) if u == 1] == [[1, 0, 1]] * 3
    # order inside a copy is the original order; sessions travel with their events
    for a, b in zip(copies.offsets[:-1], copies.offsets[1:]):
        assert np.all(np.diff(copies.item[a:b]) > 0) and np.array_equal(copies.session[a:b] % 20, copies.item[a:b] % 20)
    # through training_samples: originals (2 users) + 7 copies, one user-mode sequence each
    samples = training_samples(augmentation_users(), AUG_BEHAVIORS, protocol="last_event", augment=4, seed=0)
    assert len(samples) == 2 + 7


def test_augmentation_never_drops_target_events_and_is_seeded():
    for seed in range(5):
        copies = copies_by_user(seed)
        for a, b in zip(copies.offsets[:-1], copies.offsets[1:]):
            kept_buys = copies.item[a:b][copies.behavior[a:b] == 2]
            assert kept_buys.tolist() in ([4, 10], [21])  # every training buy of the user, always
    # 12 buys: the r/(level+1) rule would drop floor(12 r / 3) = k of them if buys were not protected
    behaviors = [2, 0] * 12 + [0, 0]
    events = training_prefix(sequences_frame([(list(range(26)), behaviors, list(range(26)))]), "last_event")
    table = BehaviorTable.from_table(AUG_BEHAVIORS)
    level, is_target = table.levels, table.is_target
    copies = augment_copies(events, level, is_target, 4, np.random.default_rng(0))
    assert [int((behaviors == 2).sum()) for behaviors in per_copy(copies)] == [12] * 4
    assert [int((behaviors == 0).sum()) for behaviors in per_copy(copies)] == [9, 6, 3, 0]
    first, again = copies_by_user(7), copies_by_user(7)
    assert np.array_equal(first.item, again.item) and np.array_equal(first.offsets, again.offsets)
    assert not np.array_equal(first.item, copies_by_user(8).item)


def test_augmentation_draws_uniformly_without_replacement():
    events = training_prefix(augmentation_users(), "last_event")
    events = events.select(events.sequence_of_event() == 0).drop_short(1)  # user 0 only
    table = BehaviorTable.from_table(AUG_BEHAVIORS)
    level, is_target = table.levels, table.is_target
    kept = np.zeros(16)
    n_draws = 400
    rng = np.random.default_rng(0)
    for _ in range(n_draws):
        copy2 = augment_copies(events, level, is_target, 4, rng)
        copy2 = copy2.item[copy2.offsets[1] : copy2.offsets[2]]  # r = 1/2: 4 of the 8 pv dropped
        kept[copy2] += 1
    pv = np.flatnonzero(np.array([0, 1, 0, 0, 2, 1, 0, 0, 1, 0, 2, 0, 1, 0]) == 0)
    assert np.all(np.abs(kept[pv] / n_draws - 0.5) < 0.1), kept[pv] / n_draws


def test_augment_modes_static_and_per_epoch():
    kwargs = dict(protocol="last_event", mode="user", augment=4, seed=3)
    static, _ = make_datasets(augmentation_users(), AUG_BEHAVIORS, np.zeros((24, 2), int), VOCAB, **kwargs)
    per_epoch, _ = make_datasets(augmentation_users(), AUG_BEHAVIORS, np.zeros((24, 2), int), VOCAB,
                                 augment_mode="per_epoch", **kwargs)  # fmt: skip
    draws = {}
    for epoch in (1, 2, 1):
        static.set_epoch(epoch)
        per_epoch.set_epoch(epoch)
        draws.setdefault(epoch, []).append((static.samples.events.item.copy(), per_epoch.samples.events.item.copy()))
    assert np.array_equal(draws[1][0][0], draws[2][0][0])  # static: the same copies every epoch
    assert not np.array_equal(draws[1][0][1], draws[2][0][1])  # per_epoch: fresh copies
    assert np.array_equal(draws[1][0][1], draws[1][1][1])  # ... reproducible from (seed, epoch)
    assert len(static) == len(per_epoch) == 9


# ----------------------------------------------------------------------------------------------------------
# Sampler
# ----------------------------------------------------------------------------------------------------------


def test_epoch_sampler_is_seeded_sharded_and_padded():
    data = list(range(10))
    sampler = EpochSampler(data, seed=1, pad_to=4)
    sampler.set_epoch(1)
    first = list(sampler)
    assert len(first) == 12 and sorted(set(first)) == data  # padded to 3 x 4 by wrapping
    assert list(sampler) == first
    sampler.set_epoch(2)
    assert list(sampler) != first
    shards = []
    for rank in range(2):
        shard = EpochSampler(data, seed=1, rank=rank, world_size=2, pad_to=4)
        shard.set_epoch(1)
        shards.append(list(shard))
    assert len(shards[0]) == len(shards[1]) == 6 and sorted(shards[0] + shards[1]) == sorted(first)
    ordered = EpochSampler(data, seed=1, shuffle=False, rank=1, world_size=3)
    assert list(ordered) == [1, 4, 7]  # evaluation: no padding, no duplicates


# ----------------------------------------------------------------------------------------------------------
# Property: no validation / test event ever reaches a training sample
# ----------------------------------------------------------------------------------------------------------


@st.composite
def random_users(draw):
    users = []
    for _ in range(draw(st.integers(1, 5))):
        n = draw(st.integers(1, 14))
        behaviors = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        new_session = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        sessions = np.cumsum([False] + new_session[1:]).tolist()
        users.append((behaviors, sessions))
    return users


@settings(max_examples=60, deadline=None)
@given(users=random_users(), protocol=st.sampled_from(["last_event", "last_session"]),
       mode=st.sampled_from(["user", "event"]), max_history=st.integers(1, 6), augment=st.integers(0, 3),
       seed=st.integers(0, 3))  # fmt: skip
def test_training_samples_never_contain_validation_or_test_events(users, protocol, mode, max_history, augment, seed):
    # every event gets its own item, so an item id tells (user, position)
    rows, owner, position, next_item = [], [], [], 0
    for user, (behaviors, sessions) in enumerate(users):
        items = list(range(next_item, next_item + len(behaviors)))
        next_item += len(items)
        rows.append((items, behaviors, sessions))
        owner += [user] * len(items)
        position += list(range(len(items)))
    sequences = sequences_frame(rows)
    owner, position = np.array(owner), np.array(position)
    valid = sequences[f"{protocol}_valid"].to_numpy()
    test = sequences[f"{protocol}_test"].to_numpy()
    codes = np.stack([np.arange(next_item) // 10, np.arange(next_item) % 10], 1)
    vocab = TokenVocab(("cart", "pv", "buy"), (next_item // 10 + 1, 10))
    train, valid_set = make_datasets(sequences, BEHAVIORS, codes, vocab, protocol=protocol, mode=mode,
                                     max_history=max_history, augment=augment, seed=seed)  # fmt: skip

    def items_of(samples, start, stop):
        return [samples.events.item[a:b] for a, b in zip(start, stop)]

    samples = train.samples
    contexts = items_of(samples, samples.context_start, samples.context_stop)
    targets = items_of(samples, samples.target_start, samples.target_stop)
    for context, target, user in zip(contexts, targets, samples.user):
        events = np.concatenate([context, target])
        assert len(target) == 1 and np.all(owner[events] == user)
        assert valid[user] > 0 and np.all(position[events] < valid[user])  # training part only
        assert len(context) <= max_history
        assert np.all(np.diff(position[events]) > 0)  # time order kept (copies are subsequences)
    # the same through the collated tokens: every code token decodes to a training event
    if len(train):
        batch = batch_of(train)
        slot = batch["slot"]
        code0 = batch["input_ids"][(slot == 1) & (batch["attention_mask"] == 1)] - vocab.level_offsets[0]
        code1 = batch["input_ids"][(slot == 2) & (batch["attention_mask"] == 1)] - vocab.level_offsets[1]
        items = (code0 * 10 + code1).numpy()
        assert np.all(position[items] < valid[owner[items]])

    samples = valid_set.samples
    assert len(samples) == int(np.sum(np.where(test >= 0, test - valid, 0)))  # one per validation target
    contexts = items_of(samples, samples.context_start, samples.context_stop)
    targets = items_of(samples, samples.target_start, samples.target_stop)
    for context, target, user in zip(contexts, targets, samples.user):
        assert np.all(owner[np.concatenate([context, target])] == user)
        assert np.all(position[context] < valid[user]) and len(context) == min(valid[user], max_history)
        assert valid[user] <= position[target[0]] < test[user]  # a validation event, never a test event


def test_windows_mode_covers_the_whole_training_prefix_without_overlap():
    user = (list(range(7)), [1] * 7, [0] * 7)  # 7 events, valid = 5: training prefix = items 0..4
    sequences = sequences_frame([user])
    samples = training_samples(sequences, BEHAVIORS, protocol="last_event", mode="windows", max_history=1)
    windows = [samples.events.item[a:b].tolist() for a, b in zip(samples.context_start, samples.target_stop)]
    assert windows == [[3, 4], [1, 2], [0]]  # newest first, width max_history + 1, nothing after valid
    assert samples.loss_on_context
    last = training_samples(sequences, BEHAVIORS, protocol="last_event", mode="user", max_history=1)
    assert samples.events.item[last.context_start[0]:last.target_stop[0]].tolist() == windows[0]


def test_auto_mode_is_windows_for_decoders_and_event_for_encoder_decoders():
    kw = dict(protocol="last_event", max_history=2)
    for encoder_decoder, explicit in ((False, "windows"), (True, "event")):
        auto, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, mode="auto", encoder_decoder=encoder_decoder, **kw)
        same, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, mode=explicit, encoder_decoder=encoder_decoder, **kw)
        assert len(auto) == len(same)
        assert as_lists(batch_of(auto)) == as_lists(batch_of(same))
    tiger, _ = make_datasets(TWO_USERS, BEHAVIORS, CODES, VOCAB, mode="auto", encoder_decoder=True, **kw)
    assert len(tiger) == 5  # one sample per training event with a history (see the event-mode test above)


def test_users_outside_the_protocol_add_training_only_samples():
    # user 2 has one session: outside last_session, so it has no validation or test samples
    users = sequences_frame([*[(i, b, s) for i, b, s in [
        ([0, 1, 2, 3, 4, 5], [1, 0, 1, 2, 1, 0], [0, 0, 1, 1, 2, 3]),
        ([5, 4, 3, 2, 1], [1, 1, 2, 0, 2], [0, 1, 1, 2, 2])]], ([1, 2, 0], [0, 0, 1], [0, 0, 0])])
    protocol = training_samples(users, BEHAVIORS, protocol="last_session", mode="windows", max_history=5)
    everyone = training_samples(users, BEHAVIORS, protocol="last_session", mode="windows", max_history=5,
                                users="all")
    assert sorted(set(protocol.user.tolist())) == [0, 1] and sorted(set(everyone.user.tolist())) == [0, 1, 2]
    added = everyone.user == 2
    assert everyone.events.item[everyone.context_start[added][0]:everyone.target_stop[added][0]].tolist() == [1, 2, 0]
    _, valid = make_datasets(users, BEHAVIORS, CODES, VOCAB, protocol="last_session", max_history=2, users="all")
    assert 2 not in valid.samples.user.tolist()  # validation stays the protocol's


@pytest.mark.parametrize("mode", ["windows", "event"])
def test_without_loss_on_repeats_repeat_targets_stay_in_the_context_without_labels(mode):
    # user 0 repeats item 1 in its second session; user 1 never repeats
    users = sequences_frame([([0, 1, 2, 1, 3, 4], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 2, 3]),
                             ([5, 4, 3, 2, 1], [1, 1, 2, 0, 2], [0, 1, 1, 2, 2])])
    kw = dict(protocol="last_session", mode=mode, max_history=5, users="all")
    full, _ = make_datasets(users, BEHAVIORS, CODES, VOCAB, **kw)
    explore, _ = make_datasets(users, BEHAVIORS, CODES, VOCAB, loss_on_repeats=False, **kw)
    a, b = batch_of(full), batch_of(explore)
    assert torch.equal(a["input_ids"], b["input_ids"])  # same tokens: only labels change
    dropped = (a["labels"] != X) & (b["labels"] == X)
    assert not ((b["labels"] != X) & (a["labels"] == X)).any()
    # exactly the code tokens (2 levels) of the one repeat event lose their labels
    assert dropped.sum().item() == 2
    assert set(a["input_ids"][dropped].tolist()) == set((VOCAB.code_tokens(CODES[[1]]))[0].tolist())
