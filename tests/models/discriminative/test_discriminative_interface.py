"""Interface contract of every discriminative baseline: shapes, finite training, padding,
truncation, target behaviors, ranking helper and factory."""

from __future__ import annotations

import pytest
import torch

from discriminative_testutils import BEHAVIOR_VARIANTS, MAX_LEN, N_BEHAVIORS, N_ITEMS, assert_differs, random_batch

from seqrec_pipeline import params
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.models.discriminative import (
    DISCRIMINATIVE_MODELS,
    build_discriminative,
    topk_items,
)

ALL = sorted(DISCRIMINATIVE_MODELS)
BEHAVIOR_AWARE = ["mbht", "mbstr", "pbat", *BEHAVIOR_VARIANTS]


def test_registry_lists_the_baselines_and_their_behavior_variants():
    assert set(DISCRIMINATIVE_MODELS) == {"sasrec", "bert4rec", "gru4rec", "mbht", "mbstr", "pbat",
                                          "sasrec_behavior", "bert4rec_behavior", "gru4rec_behavior"}
    assert {n for n, cls in DISCRIMINATIVE_MODELS.items() if cls.behavior_aware} == set(BEHAVIOR_AWARE)
    assert set(params.DISCRIMINATIVE_MODELS) == set(DISCRIMINATIVE_MODELS)  # what smb_rec accepts as model=
    for variant, base in BEHAVIOR_VARIANTS.items():
        assert issubclass(DISCRIMINATIVE_MODELS[variant], DISCRIMINATIVE_MODELS[base])


@pytest.mark.parametrize("name", ALL)
def test_history_behaviors_matter_only_for_models_that_embed_them(name, make_model, batch):
    """The single-behavior baselines ignore the behaviors of the history; their ``_behavior`` variants and the
    multi-behavior models do not (the same items with other behaviors give other scores)."""
    model = make_model(name).eval()
    items, behaviors, tb = batch["items"], batch["behaviors"], batch["target_behavior"]
    other = torch.where(items > 0, behaviors % N_BEHAVIORS + 1, 0)  # every history event gets another behavior
    with torch.no_grad():
        reference, changed = model.score(items, behaviors, tb), model.score(items, other, tb)
    if name in ("sasrec", "bert4rec", "gru4rec"):
        assert torch.equal(reference, changed)
    else:
        for row in torch.nonzero(items.any(1)).flatten().tolist():  # rows with a history
            assert_differs(reference[row], changed[row])


@pytest.mark.parametrize("variant, base", BEHAVIOR_VARIANTS.items())
def test_behavior_variant_is_its_base_model_plus_behavior_embeddings(variant, base, make_model, batch):
    """With zero behavior embeddings a variant computes exactly its base model (same weights otherwise)."""
    model, plain = make_model(variant).eval(), make_model(base).eval()
    extra = set(model.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("behavior_input.") for k in extra)
    assert set(plain.state_dict()) <= set(model.state_dict())
    model.load_state_dict({**model.state_dict(), **plain.state_dict()})
    items, behaviors, tb = batch["items"], batch["behaviors"], batch["target_behavior"]
    with torch.no_grad():
        assert_differs(model.score(items, behaviors, tb), plain.score(items, behaviors, tb))
        for table in model.behavior_input.parameters():
            table.zero_()
        torch.testing.assert_close(model.score(items, behaviors, tb), plain.score(items, behaviors, tb))
    # next-item variants also embed the behavior of the predicted event; the cloze one reads it on its [MASK]
    assert (model.behavior_input.query is not None) == (base != "bert4rec")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("loss_type", ["ce", "bpr"])
def test_forward_backward_finite(name, loss_type, make_model, batch):
    model = make_model(name, loss_type=loss_type, dtype=torch.float32)
    rep = model(batch["items"], batch["behaviors"], batch["target_behavior"])
    assert rep.shape == (6, model.repr_dim)
    logits = model.score(batch["items"], batch["behaviors"], batch["target_behavior"])
    assert logits.shape == (6, N_ITEMS)
    assert torch.isfinite(logits).all()

    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    if loss_type == "ce":  # untrained model: close to uniform over the catalog
        assert 0.5 * torch.log(torch.tensor(N_ITEMS)) < loss < 2 * torch.log(torch.tensor(N_ITEMS))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


@pytest.mark.parametrize("name", ALL)
def test_bpr_uses_given_negative(name, make_model, batch):
    model = make_model(name, loss_type="bpr").eval()
    # With the target as its own negative the margin is 0, so the loss is exactly log 2 (cloze
    # models: mask_ratio 0, so the appended target is the only predicted position).
    if hasattr(model, "mask_ratio"):
        model.mask_ratio = 0.0
    loss = model.loss({**batch, "negative_item": batch["target_item"]})
    assert loss.item() == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_padding_side_and_amount_do_not_change_scores(name, make_model, batch):
    model = make_model(name).eval()
    items, behaviors, tb = batch["items"], batch["behaviors"], batch["target_behavior"]
    with torch.no_grad():
        reference = model.score(items, behaviors, tb)
        # (a) three extra padding columns on the left
        pad = torch.zeros(items.size(0), 3, dtype=torch.long)
        left = model.score(torch.cat([pad, items], 1), torch.cat([pad, behaviors], 1), tb)
        # (b) left-aligned rows (real events first) with padding on the right
        order = torch.sort((items == 0).to(torch.int8), dim=1, stable=True).indices
        right = model.score(
            torch.cat([items.gather(1, order), pad], 1), torch.cat([behaviors.gather(1, order), pad], 1), tb
        )
        # (c) garbage in the behavior column of padding positions
        noisy = behaviors.masked_fill(items == 0, 2)
        garbage = model.score(items, noisy, tb)
    torch.testing.assert_close(left, reference)
    torch.testing.assert_close(right, reference)
    torch.testing.assert_close(garbage, reference)
    # The rows differ from each other, so the comparison above is not between constants.
    assert_differs(reference[0], reference[1])


@pytest.mark.parametrize("name", ALL)
def test_long_histories_keep_the_most_recent_events(name, make_model):
    model = make_model(name).eval()
    long = random_batch(B=3, S=MAX_LEN + 5, seed=3)
    items, behaviors = long["items"][:2], long["behaviors"][:2]  # two full rows
    with torch.no_grad():
        full = model.score(items, behaviors, 0)
        cut = model.score(items[:, -MAX_LEN:], behaviors[:, -MAX_LEN:], 0)
        other = items.clone()
        other[:, -1] = other[:, -1] % N_ITEMS + 1  # change the most recent event
        changed = model.score(other, behaviors, 0)
    torch.testing.assert_close(full, cut)
    assert_differs(full, changed)


@pytest.mark.parametrize("name", ALL)
def test_empty_history_gives_finite_scores(name, make_model):
    model = make_model(name).eval()
    items = torch.zeros(2, MAX_LEN, dtype=torch.long)
    logits = model.score(items, items.clone(), torch.tensor([0, 1]))
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL)
def test_target_behavior_matters_only_for_behavior_aware_models(name, make_model, batch):
    model = make_model(name).eval()
    items, behaviors = batch["items"], batch["behaviors"]
    with torch.no_grad():
        per_behavior = [model.score(items, behaviors, torch.full((6,), b)) for b in range(N_BEHAVIORS)]
        default = model.score(items, behaviors)  # None -> default_target_behavior (last behavior)
    torch.testing.assert_close(default, per_behavior[N_BEHAVIORS - 1])
    for other in per_behavior[1:]:
        if model.behavior_aware:
            for row in range(6):
                assert_differs(per_behavior[0][row], other[row])
        else:
            assert torch.equal(per_behavior[0], other)


@pytest.mark.parametrize("name", ALL)
def test_ranking_never_returns_padding_or_mask(name, make_model, batch):
    model = make_model(name).eval()
    with torch.no_grad():
        logits = model.score(batch["items"], batch["behaviors"], batch["target_behavior"])
    scores, top = topk_items(logits, k=N_ITEMS + 10)  # k larger than the catalog is capped
    assert top.shape == (6, N_ITEMS)
    assert top.min() >= 0 and top.max() < N_ITEMS
    # every item exactly once per row: column i is dense item i, nothing else
    assert (top.sort(-1).values == torch.arange(N_ITEMS)).all()

    history = batch["items"] - 1  # padding becomes -1 and is ignored
    scores, top = topk_items(logits, k=5, exclude=history)
    for row in range(6):
        seen = set(history[row][history[row] >= 0].tolist())
        assert not seen & set(top[row].tolist())
        assert torch.isfinite(scores[row]).all()


def test_topk_items_matches_a_full_sort():
    logits = torch.randn(4, 50)
    scores, top = topk_items(logits, 7)
    expected = logits.argsort(-1, descending=True)[:, :7]
    assert torch.equal(top, expected)
    torch.testing.assert_close(scores, logits.gather(1, expected))

    banned = torch.zeros(4, 50, dtype=torch.bool)
    banned[:, expected[0, 0]] = True
    _, top = topk_items(logits, 7, exclude=banned)
    assert not (top == expected[0, 0]).any()
    # duplicates and padding in an index exclusion list
    _, top = topk_items(logits, 3, exclude=torch.tensor([[-1, 5, 5], [-1, -1, -1], [0, 1, 2], [49, -1, 49]]))
    assert not (top[0] == 5).any() and not (top[3] == 49).any()
    assert torch.equal(top[1], expected[1, :3])


def test_factory_errors_and_config_roundtrip():
    with pytest.raises(InputError, match="valid names: sasrec, bert4rec, gru4rec, mbht, mbstr, pbat"):
        build_discriminative("caser", 10, 2, 5)
    with pytest.raises(InputError, match="unknown option.*hiden_size"):
        build_discriminative("sasrec", 10, 2, 5, hiden_size=8)
    with pytest.raises(ValueError, match="loss_type"):
        build_discriminative("sasrec", 10, 2, 5, loss_type="hinge")

    variant = build_discriminative("SASRec-behavior", 10, 2, 5, hidden_size=8, inner_size=16)
    assert variant.name == variant.config["name"] == "sasrec_behavior" and variant.config["hidden_size"] == 8
    rebuilt = build_discriminative(**variant.config)
    rebuilt.load_state_dict(variant.state_dict())  # strict: the behavior tables are part of the checkpoint
    with pytest.raises(InputError, match="unknown option.*behaviors"):
        build_discriminative("gru4rec_behavior", 10, 2, 5, behaviors=True)

    model = build_discriminative("MB-STR", 10, 2, 5, hidden_size=8, inner_size=16)
    assert model.name == "mbstr" and model.config["name"] == "mbstr"
    assert model.config["hidden_size"] == 8 and model.config["n_shared_experts"] == 3  # default recorded
    rebuilt = build_discriminative(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    items = torch.tensor([[0, 1, 2, 3]])
    model.eval(), rebuilt.eval()
    torch.testing.assert_close(rebuilt.score(items, (items > 0).long()), model.score(items, (items > 0).long()))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("sasrec", dict(hidden_size=128, n_layers=2, n_heads=2, inner_size=256, dropout=0.5)),
        (
            "bert4rec",
            dict(hidden_size=64, n_layers=2, n_heads=2, inner_size=256, dropout=0.2, mask_ratio=0.2, ft_ratio=0.5),
        ),
        ("gru4rec", dict(embedding_size=64, hidden_size=128, n_layers=1, dropout=0.3)),
        ("mbht", dict(hidden_size=64, n_layers=2, n_heads=2, hyper_len=6)),
        (
            "mbstr",
            dict(hidden_size=64, n_layers=2, n_heads=2, num_buckets=32, max_distance=40, n_shared_experts=3),
        ),
        ("pbat", dict(hidden_size=64, n_layers=2, n_heads=2, hidden_act="elu")),
        ("sasrec_behavior", dict(hidden_size=128, n_layers=2, n_heads=2, inner_size=256, dropout=0.5)),
        ("bert4rec_behavior", dict(hidden_size=64, n_layers=2, mask_ratio=0.2, ft_ratio=0.5)),
        ("gru4rec_behavior", dict(embedding_size=64, hidden_size=128, n_layers=1, dropout=0.3)),
    ],
)
def test_reference_sizes_are_the_defaults(name, expected):
    config = build_discriminative(name, 10, 2, 20).config
    assert {k: config[k] for k in expected} == expected
