"""The serving library on a tiny random model: batch and request answers agree, errors name their field."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from seqrec_pipeline.errors import InputError
from seqrec_pipeline.ranking.repeat import Mixture, RepeatScorer
from seqrec_pipeline.serving import Recommender, build_recommender, recommend_users
from seqrec_pipeline.serving.requests import RequestError, answer
from seqrec_pipeline.ranking.successors import (CooccurrencePooling, SuccessorPooling, cooccurrence_table,
                                                successor_table)
from seqrec_pipeline.splits import events_before, latest_set
from seqrec_pipeline.vocab import TokenVocab
from tests.decoding.helpers import random_codes, tiny_model

NAMES = ("view", "cart", "buy")
SIZES = (4, 4, 4)
N_ITEMS, N_USERS, GAP = 40, 12, 1800


def _sequences(seed: int = 0) -> pl.DataFrame:
    """Users with 3..9 events, a session break every third event, timestamps in seconds."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(N_USERS):
        n = int(rng.integers(3, 10))
        times = 1_000_000 + np.cumsum(np.where(np.arange(n) % 3 == 0, 10 * GAP, 60)).astype(np.int64)
        rows.append({"user_idx": u, "item": rng.integers(0, N_ITEMS, n).tolist(),
                     "behavior": rng.integers(0, 3, n).tolist(), "timestamp": times.tolist(),
                     "session": (np.arange(n) // 3).tolist(), "n_events": n,
                     "last_session_valid": n - 2 if n > 6 else -1, "last_session_test": n - 1 if n > 6 else -1})
    return pl.DataFrame(rows, schema_overrides={"item": pl.List(pl.Int32), "behavior": pl.List(pl.Int8),
                                                "session": pl.List(pl.Int32), "user_idx": pl.Int32})


@pytest.fixture(scope="module")
def setup():
    vocab = TokenVocab(NAMES, SIZES)
    codes = random_codes(SIZES, N_ITEMS, seed=1)
    sid = pl.DataFrame({"item_idx": np.arange(N_ITEMS, dtype=np.int32),
                        **{f"c{lvl}": codes[:, lvl].astype(np.int32) for lvl in range(len(SIZES))}})
    items = pl.DataFrame({"item_idx": np.arange(N_ITEMS, dtype=np.int32),
                          "item_id": [f"sku-{i}" for i in range(N_ITEMS)]})
    users = pl.DataFrame({"user_idx": np.arange(N_USERS, dtype=np.int32), "user_id": [f"u{u}" for u in range(N_USERS)]})
    behaviors = pl.DataFrame({"behavior_idx": [0, 1, 2], "behavior": list(NAMES), "level": [0, 1, 2]})
    head = Mixture(RepeatScorer([[1.0, 2.0, 4.0]] * 3, day_decay=0.9, session_decay=0.8), [0.0, -1.0, 1.0],
                   [0.5, 0.5, 0.0], [1.0, 2.0, 0.5], successors=SuccessorPooling([0.5, 0.0, 0.3], 2, 0.7, width=5),
                   cooccurrence=CooccurrencePooling([0.4, 0.2, 0.0], 0.5, 3, 0.7, width=5, window=2)).to_dict()
    sequences = _sequences()
    rec = build_recommender(tiny_model("gamer", vocab), sequences, items, behaviors, sid, vocab.to_dict(), head,
                            protocol="last_session", max_history=5, beam_size=8, batch_size=4, renormalize=False,
                            temperature=None, session_gap_seconds=GAP, chunk_events=1000)
    return rec, sequences, users


def _request(sequences: pl.DataFrame, row: int, **extra) -> dict:
    r = sequences.row(row, named=True)
    return {"items": [f"sku-{i}" for i in r["item"]], "behaviors": [NAMES[b] for b in r["behavior"]],
            "timestamps": r["timestamp"], **extra}


def test_latest_set_reads_the_whole_log():
    sequences = _sequences()
    data = latest_set(sequences, max_history=4, behaviors=[2, 0])
    first = sequences.row(0, named=True)
    assert data.n_samples == 2 * N_USERS and data.sample_behavior[:4].tolist() == [2, 0, 2, 0]
    assert data.histories[0][:, 0].tolist() == first["item"][-4:]  # the last max_history events
    assert data.past_item[data.past_offsets[0]:data.past_offsets[1]].tolist() == first["item"]  # the whole log
    assert data.window_time[0] == first["timestamp"][-1]  # ages are measured from the last event
    assert data.targets[0] == [] and data.repeat[0] == []
    # a window longer than the log holds the whole log (lengths are unsigned in polars: no wrap-around)
    data = latest_set(sequences, max_history=50, behaviors=[0])
    assert np.array_equal(data.history_lengths, sequences["item"].list.len().to_numpy())


def test_requests_answer_what_the_batch_ranks(setup):
    rec, sequences, users = setup
    table, summary = recommend_users(rec, sequences, users, k=5)
    assert summary["n_users"] == N_USERS and summary["repeat_head"] is True and table.height == 3 * N_USERS
    answers = answer(rec, [_request(sequences, r, k=5) for r in range(N_USERS)])
    for row in table.iter_rows(named=True):
        u = int(row["user_id"][1:])
        got = next(x for x in answers[u]["recommendations"] if x["behavior"] == row["behavior"])
        assert got["items"] == row["items"] and len(got["items"]) == 5
        np.testing.assert_allclose(got["scores"], row["scores"], rtol=1e-5)
    # the history items come back first for buy (gate bias 1), and the lists are ranked
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in table.iter_rows(named=True))
    # the same without the repeat head: the beam's top k (summed log-probabilities)
    plain, summary = recommend_users(rec, sequences, users, k=5, use_repeat=False)
    assert summary["repeat_head"] is False and (np.concatenate(plain["scores"].to_list()) < 0).all()
    plain_answers = answer(rec, [_request(sequences, r, k=5) for r in range(N_USERS)], use_repeat=False)
    assert plain_answers[3]["recommendations"][1]["items"] == plain.row(3 * 3 + 1, named=True)["items"]


def test_users_ranked_in_chunks_get_the_lists_of_one_pass(setup):
    rec, sequences, users = setup
    whole, summary = recommend_users(rec, sequences, users, k=5)
    chunked, chunked_summary = recommend_users(rec, sequences, users, k=5, chunk_users=5)  # 5 + 5 + 2 users
    assert N_USERS % 5 and chunked_summary == summary
    assert chunked["user_id"].to_list() == whole["user_id"].to_list()
    assert chunked["behavior"].to_list() == whole["behavior"].to_list()
    assert chunked["items"].to_list() == whole["items"].to_list()
    np.testing.assert_allclose(np.concatenate(chunked["scores"].to_list()), np.concatenate(whole["scores"].to_list()),
                               rtol=1e-5)


def test_a_saved_recommender_answers_the_same(setup, tmp_path):
    rec, sequences, _ = setup
    paths = rec.save(tmp_path)
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "model.safetensors"}
    requests = [_request(sequences, r, k=4) for r in range(3)]
    assert answer(Recommender.load(paths), requests) == answer(rec, requests)
    # the head pools the recent items' successors: their table travels with the model, counted on the whole log
    table = pl.read_parquet(paths["successors"])
    expected = successor_table(events_before(sequences, "last_session", None), 5).to_frame()
    assert table.height and table.equals(expected)
    tested = sequences.filter(pl.col("last_session_test") >= 0).row(0, named=True)["item"]
    assert {"source": tested[-2], "item": tested[-1]} in table.select("source", "item").to_dicts()  # the test window
    # and the co-occurring items', with the window the head was fitted with
    neighbors = pl.read_parquet(paths["cooccurrence"])
    expected = cooccurrence_table(events_before(sequences, "last_session", None), 5, window=2,
                                  chunk_events=1000).to_frame()
    assert neighbors.height and neighbors.equals(expected)
    for name in ("successors", "cooccurrence"):
        with pytest.raises(InputError, match=f"{name}.parquet is missing: package the model again"):
            Recommender.load({key: path for key, path in paths.items() if key != name})


def test_unknown_items_are_skipped_and_empty_histories_fall_back(setup):
    rec, sequences, _ = setup
    known = _request(sequences, 0, request_behaviors=["buy"], k=3)
    noisy = {key: value + extra for (key, value), extra in zip(
        known.items(), (["nope", "gone"], ["view", "buy"], [1, 2], [], 0), strict=True)}
    noisy["k"] = 3
    out = answer(rec, [known, noisy, {"items": ["nope"], "behaviors": ["view"], "timestamps": [5], "k": 2},
                       {"items": [], "behaviors": [], "timestamps": [], "request_behaviors": ["cart", "view"]}])
    assert out[1]["unknown_items"] == 2 and out[1]["recommendations"] == out[0]["recommendations"]
    assert out[0]["unknown_items"] == 0 and not out[0]["fallback"]
    assert out[2]["fallback"] and out[2]["unknown_items"] == 1
    assert [r["behavior"] for r in out[2]["recommendations"]] == list(NAMES)  # default: every behavior
    assert out[2]["recommendations"][0]["items"] == rec.popular["view"]["items"][:2]
    assert out[3]["fallback"] and [r["behavior"] for r in out[3]["recommendations"]] == ["cart", "view"]
    assert len(out[3]["recommendations"][0]["items"]) == min(10, rec.settings.beam_size)  # default k
    # the popular items are counted on the training data: the most frequent training item per behavior first
    counts = rec.popular["view"]["scores"]
    assert counts == sorted(counts, reverse=True) and 0 < counts[0] <= 1


@pytest.mark.parametrize("request_row, field", [
    ({"items": ["sku-1"], "behaviors": ["view", "buy"], "timestamps": [1, 2]}, "same length"),
    ({"items": "sku-1", "behaviors": ["view"], "timestamps": [1]}, "'items' must be a list"),
    ({"items": ["sku-1"], "behaviors": ["like"], "timestamps": [1]}, "'behaviors' has unknown behavior"),
    ({"items": ["sku-1"], "behaviors": ["view"], "timestamps": ["noon"]}, "'timestamps' must be integers"),
    ({"items": ["sku-1"], "behaviors": ["view"], "timestamps": [1], "request_behaviors": ["fly"]},
     "'request_behaviors' has unknown behavior"),
    ({"items": ["sku-1"], "behaviors": ["view"], "timestamps": [1], "k": 0}, "'k' must be an integer in 1..8"),
    ({"items": ["sku-1"], "behaviors": ["view"], "timestamps": [1], "k": 9}, "'k' must be an integer in 1..8"),
    ({"behaviors": ["view"], "timestamps": [1]}, "'items' is missing"),
    ({"items": [], "behaviors": [], "timestamps": [], "user": "x"}, "unknown field(s) ['user']"),
])
def test_bad_requests_name_the_field(setup, request_row, field):
    rec, _, _ = setup
    with pytest.raises(RequestError, match=r"^row 1: ") as error:
        answer(rec, [{"items": [], "behaviors": [], "timestamps": []}, request_row])
    assert field in str(error.value)


def test_batch_users_from_a_file_count_the_unknown_ones(setup, tmp_path):
    rec, sequences, users = setup
    wanted = tmp_path / "users.txt"
    wanted.write_text("u3\n\n  u1 \nstranger\nu3\n")
    table, summary = recommend_users(rec, sequences, users, which=str(wanted), behaviors=["buy"], k=2)
    assert table["user_id"].to_list() == ["u3", "u1"] and table["behavior"].to_list() == ["buy", "buy"]
    assert summary["n_unknown_users"] == 1 and summary["n_requested"] == 3
    with pytest.raises(InputError, match="unknown behavior"):
        recommend_users(rec, sequences, users, behaviors=["like"], k=2)
    with pytest.raises(InputError, match=r"k must lie in 1..8"):
        recommend_users(rec, sequences, users, k=20)
    with pytest.raises(InputError, match="no file"):
        recommend_users(rec, sequences, users, which=str(tmp_path / "missing.txt"), k=2)


def test_a_recommender_with_an_item_head_ranks_with_it_and_saves_it(setup, tmp_path):
    rec, sequences, _ = setup
    vocab = TokenVocab(NAMES, SIZES)
    sid = pl.DataFrame({"item_idx": np.arange(N_ITEMS, dtype=np.int32),
                        **{f"c{lvl}": c.astype(np.int32) for lvl, c in enumerate(random_codes(SIZES, N_ITEMS, 1).T)}})
    model = tiny_model("gamer", vocab, item_head=True, catalog_size=N_ITEMS)
    torch.nn.init.normal_(model.item_head.weight, std=2.0)  # a head strong enough to reorder the beam
    head_rec = build_recommender(model, sequences, rec.items, rec.behaviors_table, sid, vocab.to_dict(), None,
                                 protocol="last_session", max_history=5, beam_size=8, batch_size=4,
                                 renormalize=False, temperature=None, session_gap_seconds=GAP, chunk_events=1000)
    requests = [_request(sequences, r, k=5) for r in range(N_USERS)]
    with_head = answer(head_rec, requests)
    model.config.item_score_weight = 0.0
    without = answer(head_rec, requests)
    def items(answers):
        return [[r["items"] for r in a["recommendations"]] for a in answers]
    assert items(with_head) != items(without)  # the head's log-probabilities re-rank the beams
    model.config.item_score_weight = 1.0
    loaded = Recommender.load(head_rec.save(tmp_path))
    assert loaded.model.config.item_head and loaded.model.item_head is not None
    assert answer(loaded, requests) == with_head


def test_a_discriminative_recommender_ranks_as_the_evaluation_and_saves_without_codes(setup, tmp_path):
    """A baseline (SASRec with behavior inputs) behind the same object: its lists are the evaluation's functions'
    (full-catalog top candidates, then the head's mixture), and its saved folder has no SID table."""
    from seqrec_pipeline.models.discriminative import build_discriminative
    from seqrec_pipeline.ranking import rank_discriminative
    from seqrec_pipeline.ranking.repeat import RepeatInputs, mixture_ranking

    rec, sequences, users = setup
    torch.manual_seed(0)
    model = build_discriminative("sasrec_behavior", n_items=N_ITEMS, n_behaviors=3, max_len=5).eval()
    base = build_recommender(model, sequences, rec.items, rec.behaviors_table, None, None, rec.repeat_head,
                             protocol="last_session", max_history=5, beam_size=12, batch_size=4, renormalize=False,
                             temperature=None, session_gap_seconds=GAP, chunk_events=1000)
    assert base.kind == "discriminative" and rec.kind == "decoder"
    table, summary = recommend_users(base, sequences, users, k=6)
    assert summary["repeat_head"] is True and table.height == 3 * N_USERS
    data = latest_set(sequences, 5, [0, 1, 2])
    expected = mixture_ranking(data, RepeatInputs(data, 3), rank_discriminative(model, data, 12, 4, 5),
                               base.mixture, 6, successors=base.successors, neighbors=base.neighbors)
    ids = rec.items.sort("item_idx")["item_id"].to_numpy()
    assert table["items"].to_list() == [ids[row[row >= 0]].tolist() for row in expected.items]
    plain, _ = recommend_users(base, sequences, users, k=6, use_repeat=False)
    top = rank_discriminative(model, data, 6, 4, 5)
    assert plain["items"].to_list() == [ids[row].tolist() for row in top.items]  # the model's own top 6
    requests = [_request(sequences, r, k=6) for r in range(N_USERS)]
    answers = answer(base, requests)
    for row in table.iter_rows(named=True):
        got = next(x for x in answers[int(row["user_id"][1:])]["recommendations"] if x["behavior"] == row["behavior"])
        assert got["items"] == row["items"]
    rec.save(tmp_path)  # a decoder saved there first: its SID table must not outlive it
    paths = base.save(tmp_path)
    assert "sid_table" not in paths and not (tmp_path / "sid_table.parquet").exists()
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "model.safetensors"}
    loaded = Recommender.load(tmp_path)
    assert loaded.kind == "discriminative" and answer(loaded, requests) == answers
    with pytest.raises(InputError, match=r"package the model again \(kedro run --pipeline=smb_rec "):
        Recommender.load({key: path for key, path in paths.items() if key != "successors"})
    with pytest.raises(InputError, match=r"k must lie in 1..12"):
        recommend_users(base, sequences, users, k=13)


def test_the_item_knn_rule_ranks_as_its_evaluation_and_saves_its_table(setup, tmp_path):
    """The item_knn rule behind the same object: given what its evaluation counted and fitted, it ranks the test
    windows exactly as ``rule_ranking`` did; served (counted on the whole log) its folder holds the PPMI table and
    no weights, and answers as before once loaded."""
    from seqrec_pipeline.params import load_parameters
    from seqrec_pipeline.ranking.rules import ITEM_KNN_BLOCK, ItemKnn, item_knn_ranking
    from seqrec_pipeline.splits import eval_set

    rec, sequences, users = setup
    grid = load_parameters().repeat
    valid, test = (eval_set(sequences, "last_session", s, max_history=5) for s in ("valid", "test"))
    expected, mixture, knn = item_knn_ranking(sequences, valid, test, N_ITEMS, 3, "last_session", grid, window=2,
                                              chunk_events=1000, k=6)
    fitted = mixture.to_dict() | {"explorer": knn.settings}
    successors = successor_table(events_before(sequences, "last_session", "test"), grid.successors)
    settings = rec.settings.__class__(5, knn.width, ITEM_KNN_BLOCK, False, None, GAP)
    evaluated = Recommender(knn, None, None, rec.items, rec.behaviors_table, fitted, rec.popular, settings,
                            successors=successors)
    assert evaluated.kind == "item_knn"
    assert evaluated.rank(test, 6).items.tolist() == expected.items.tolist()

    served_knn = ItemKnn.fit(events_before(sequences, "last_session", None), N_ITEMS, **knn.settings,
                             chunk_events=1000)
    served = build_recommender(served_knn, sequences, rec.items, rec.behaviors_table, None, None, fitted,
                               protocol="last_session", max_history=5, beam_size=knn.width,
                               batch_size=ITEM_KNN_BLOCK, renormalize=False, temperature=None,
                               session_gap_seconds=GAP, chunk_events=1000)
    table, summary = recommend_users(served, sequences, users, k=6)
    assert summary["repeat_head"] is True and table.height == 3 * N_USERS
    requests = [_request(sequences, r, k=6) for r in range(N_USERS)]
    answers = answer(served, requests)
    for row in table.iter_rows(named=True):
        got = next(x for x in answers[int(row["user_id"][1:])]["recommendations"] if x["behavior"] == row["behavior"])
        assert got["items"] == row["items"]
    rec.save(tmp_path)  # a decoder saved there first: its SID table and weights must not outlive it
    paths = served.save(tmp_path)
    assert "sid_table" not in paths and not (tmp_path / "sid_table.parquet").exists()
    assert {p.name for p in (tmp_path / "model").iterdir()} == {"config.json", "ppmi.parquet"}
    loaded = Recommender.load(tmp_path)
    assert loaded.kind == "item_knn" and answer(loaded, requests) == answers
    pooled = build_recommender(served_knn, sequences, rec.items, rec.behaviors_table, None, None, rec.repeat_head,
                               protocol="last_session", max_history=5, beam_size=knn.width,
                               batch_size=ITEM_KNN_BLOCK, renormalize=False, temperature=None,
                               session_gap_seconds=GAP, chunk_events=1000)  # a head that pools the successors
    paths = pooled.save(tmp_path / "pooled")
    with pytest.raises(InputError, match=r"package the model again \(kedro run --pipeline=smb_rule "):
        Recommender.load({key: path for key, path in paths.items() if key != "successors"})


def test_the_item_prior_is_counted_on_the_log_and_saved_with_the_items(setup, tmp_path):
    """A learned repeat ranker that reads the items' popularity keeps only the catalog size in its head: the served
    recommender counts the prior on the whole log (as its tables), saves it as a column of items.parquet and answers
    the same once loaded; a folder without it stops with one line."""
    from seqrec_pipeline.ranking.repeat import RepeatRanker, item_log_share

    rec, sequences, _ = setup
    ranker = RepeatRanker([[0.9, 1.0]], [0.0] * 5, [1.0] * 5, [[0.3, 0.5, 0.8, -0.2, 2.0]] * 3, prior_items=N_ITEMS)
    head = Mixture(RepeatScorer([[1.0, 2.0, 4.0]] * 3, 0.9, 0.8), [0.0] * 3, [0.5] * 3, [1.0] * 3,
                   ranker=ranker).to_dict()
    assert head["ranker"]["prior_items"] == N_ITEMS and "item_prior" not in head["ranker"]
    served = build_recommender(rec.model, sequences, rec.items, rec.behaviors_table, rec.ranker.sid_table,
                               rec.ranker.sid_vocab, head, protocol="last_session", max_history=5, beam_size=8,
                               batch_size=4, renormalize=False, temperature=None, session_gap_seconds=GAP,
                               chunk_events=1000)
    expected = item_log_share(events_before(sequences, "last_session", None).item, N_ITEMS)
    np.testing.assert_array_equal(served.mixture.ranker.item_prior, expected)
    requests = [_request(sequences, r, k=6) for r in range(N_USERS)]
    answers = answer(served, requests)
    paths = served.save(tmp_path)
    items = pl.read_parquet(paths["items"])
    np.testing.assert_array_equal(items["item_prior"].to_numpy(), expected)
    assert answer(Recommender.load(tmp_path), requests) == answers
    items.drop("item_prior").write_parquet(paths["items"])
    with pytest.raises(InputError, match=r"no item_prior column: package the model again \(kedro run "):
        Recommender.load(tmp_path)
