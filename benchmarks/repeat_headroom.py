"""Where the repeat / explore mixture's accuracy can still come from: eight measurements on a project's stored runs.

    python benchmarks/repeat_headroom.py --project . --dataset retailrocket [--model gamer] [--baseline sasrec_behavior]
        [--decoder-version <smb_decoder's decoder_model version>]

Reads, through the project's catalog, the newest ``smb_decoder`` run of ``--model`` (its model, beam rankings of the
validation and test sessions) and the newest ``smb_rec`` run of ``--baseline`` (last_session), and reports NDCG@10 on
the test session, every choice made on the validation session (``ranking.repeat``'s grids, as the pipeline does):

1. **the shipped mixture** of each model (the pipeline's figure, recomputed); its repeat side (the scorer and, where
   validation keeps it, the learned repeat ranker) is the repeat side of every row below;
2. **the model's view of the history**: the repeat distribution ``P_repeat(i) ∝ repeat score(i) · p_model(i)^β``
   and the gate ``+ γ · log Σ_history p_model`` (exact log-probabilities of every history item, for the decoder from
   ``decoding.exact.score_items``), with β, γ chosen on validation;
3. **a second explorer**: the decoder's explore scores multiplied with the baseline's (product of experts over the
   union of both candidate lists, weight ``a`` on validation), i.e. what an item-level head added to the decoder
   could give at most;
4. **an oracle explorer**: each sample's explore target moved to rank r of the decoder's own list, with the
   decoder's fitted gate: how much of the metric the explore side can move at all;
5. **the model's absolute confidence**: ``P_explore(i) = p_model(i)^(1/tau)`` with the model's own log-probabilities
   (the decoder's beam scores, the baseline's full-catalog log-softmax) instead of a softmax over the candidates,
   so a model unsure of every new item leaves the history first (``normalize_explore=False``);
6. **an oracle gate**: each test sample's best (gate, temperature) of the grid, the scorer fixed: how much any
   per-query gate, however it is computed, could add;
7. **a training-free explorer**: the catalog ranked by the inner product of the item vectors with the decayed sum
   of the user's last three items' vectors (the embed stage's validation probe), alone and as a product of experts
   with each model (temperature and weight on validation);
8. **a learned gate**: per requested behavior, a logistic regression of "the target is a history item" on the query
   features of :func:`gate_features`, fitted on the validation session, whose logit, shifted and scaled per behavior
   by NDCG@10 (with the temperature), replaces the shipped one-input gate; also compared with the shipped gate on
   validation users it was not fitted on (two user folds), the comparison a default would be chosen by.

Paired differences are against ``<baseline>+repeat`` (95 % normal interval).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import numpy as np
import torch

from seqrec_pipeline.data.embeddings import recent_items_query
from seqrec_pipeline.decoding import build_prompts
from seqrec_pipeline.decoding.exact import score_items
from seqrec_pipeline.params import EvalParams, RepeatParams, validate
from seqrec_pipeline.ranking import repeat as R
from seqrec_pipeline.ranking.core import Ranking, selection_scores
from seqrec_pipeline.ranking.discriminative import eval_tensors
from seqrec_pipeline.ranking.metrics import metrics_by_part, per_sample_metrics
from seqrec_pipeline.reporting.evaluation import ranking_from_predictions
from seqrec_pipeline.splits import BehaviorTable, eval_set, training_prefix
from seqrec_pipeline.vocab import TokenVocab, item_codes

K = 10


def ndcg(items: np.ndarray, data) -> np.ndarray:
    return per_sample_metrics(items[:, :K], data.targets, ks=(K,))[f"ndcg@{K}"]


def catalog_of(project: Path, params: dict):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, runtime_params=params)
    context = session.load_context()
    return context.catalog, context.params


def decoder_history_logp(model, data, inputs, codes, vocab, levels) -> np.ndarray:
    prompts = build_prompts(data.histories, codes, vocab, levels, sessions=data.history_sessions)
    return score_items(model, prompts, codes, data.sample_user, data.sample_behavior, inputs.group_sample,
                       inputs.group_item, behavior_levels=levels, chunk_rows=2048)


@torch.no_grad()
def baseline_logp(model, data, max_history: int) -> np.ndarray:
    """Full-catalog log-softmax ``[n_samples, n_items]`` of a discriminative model."""
    items, behaviors = eval_tensors(data, max_history)
    user = torch.from_numpy(data.sample_user.astype(np.int64))
    target = torch.from_numpy(data.sample_behavior.astype(np.int64))
    return model.eval().score(items[user], behaviors[user], target).float().log_softmax(-1).numpy()


def mixture(data, feats, base: Ranking, mix: R.Mixture, hist_logp: np.ndarray, beta, gamma) -> np.ndarray:
    """The pipeline's mixture with the model's history probabilities in P_repeat (``p_model^β``) and the gate
    (``+ γ · log Σ_history p_model``)."""
    behavior = data.sample_behavior
    mass = np.full(data.n_samples, -np.inf)
    np.logaddexp.at(mass, feats.sample, hist_logp)
    return R.mixture_ranking(data, None, base, mix, K, feats,
                             repeat_log_weight=np.asarray(beta, float)[behavior][feats.sample] * hist_logp,
                             gate_offset=np.asarray(gamma, float)[behavior] * np.maximum(mass, -30)).items


def fit_history_view(valid, fv, base_v, hv, scorer, ranker, grid, betas, gammas, n_behaviors
                     ) -> tuple[R.Mixture, list, list]:
    logits = [np.inf if g >= 1 else float(np.log(g / (1 - g))) for g in grid.gates]
    best = {b: (-1.0,) for b in range(n_behaviors)}
    for bias, slope, tau, beta, gamma in itertools.product(logits, grid.gate_slopes, grid.temperatures, betas, gammas):
        if np.isinf(bias) and (slope != grid.gate_slopes[0] or tau != grid.temperatures[0] or gamma != gammas[0]):
            continue
        mix = R.Mixture(scorer, [bias] * n_behaviors, [slope] * n_behaviors, [tau] * n_behaviors, ranker=ranker)
        v = ndcg(mixture(valid, fv, base_v, mix, hv, [beta] * n_behaviors, [gamma] * n_behaviors), valid)
        for b in range(n_behaviors):
            rows = valid.sample_behavior == b
            if rows.any() and v[rows].mean() > best[b][0] + 1e-12:
                best[b] = (float(v[rows].mean()), bias, slope, tau, beta, gamma)
    mix = R.Mixture(scorer, *([best[b][i] for b in range(n_behaviors)] for i in (1, 2, 3)), ranker=ranker)
    return mix, [best[b][4] for b in range(n_behaviors)], [best[b][5] for b in range(n_behaviors)]


def product_of_experts(data, decoder_rank: Ranking, decoder_logp_fn, base_logp: np.ndarray, a: float,
                       width: int = 50) -> Ranking:
    """Scores ``a · log p_decoder + (1 - a) · log p_baseline`` over the union of both lists (``width`` of the
    baseline's best items plus the decoder's beam)."""
    top = np.argsort(-base_logp, axis=1)[:, :width]
    union = np.concatenate([decoder_rank.items, top], axis=1)
    union = np.where(union >= 0, union, top[:, :1])
    dec = decoder_logp_fn(union)
    score = a * dec + (1 - a) * np.take_along_axis(base_logp, union, 1)
    by_item = np.argsort(union, axis=1, kind="stable")  # an item in both lists keeps its first place only
    sorted_items = np.take_along_axis(union, by_item, 1)
    repeated = np.zeros(union.shape, dtype=bool)
    repeated[:, 1:] = sorted_items[:, 1:] == sorted_items[:, :-1]
    duplicate = np.zeros_like(repeated)
    np.put_along_axis(duplicate, by_item, repeated, 1)
    score = np.where(duplicate, -np.inf, score)
    order = np.argsort(-score, axis=1, kind="stable")
    score = np.take_along_axis(score, order, 1)
    items = np.where(np.isfinite(score), np.take_along_axis(union, order, 1), -1)
    return Ranking(items, score)


def gate_features(data, feats, p_rep: np.ndarray, total: np.ndarray, explore, n_behaviors: int) -> np.ndarray:
    """Per sample: log repeat evidence, log1p of the number of history items, log1p hours from the last event to
    the target window, log1p events of the last past session, log of the largest repeat probability, the base
    model's top log-probability among its explore candidates, and the last event's behavior (one-hot, the first
    behavior left out)."""
    n, lengths = data.n_samples, np.diff(data.past_offsets)
    last = np.maximum(data.past_offsets[1:] - 1, 0)
    has_past = lengths > 0
    gap_hours = np.where(has_past, data.window_time - data.past_time[last], 0) / 3600.0
    last_session = np.where(has_past, data.past_session[last], -1)
    user_of_event = np.repeat(np.arange(data.n_users), lengths)
    in_last = np.bincount(user_of_event, weights=data.past_session == last_session[user_of_event],
                          minlength=data.n_users)
    top_repeat = np.zeros(n)
    np.maximum.at(top_repeat, feats.sample, p_rep)
    e_sample, _, e_score = explore
    top, norm = np.full(n, -np.inf), np.full(n, -np.inf)
    np.maximum.at(top, e_sample, e_score)
    np.logaddexp.at(norm, e_sample, e_score)
    u = data.sample_user
    last_behavior = np.where(has_past, data.past_behavior[last], 0)[u]
    return np.column_stack([np.log(np.maximum(total, 1e-6)), np.log1p(np.bincount(feats.sample, minlength=n)),
                            np.log1p(np.maximum(gap_hours, 0))[u], np.log1p(in_last)[u],
                            np.log(np.maximum(top_repeat, 1e-6)), np.where(np.isfinite(top), top - norm, -5.0)]
                           + [(last_behavior == b).astype(float) for b in range(1, n_behaviors)])


def fit_learned_gate(data: dict, x: dict, base: Ranking, mix: R.Mixture, inputs, feats, grid, n_behaviors: int,
                     used: np.ndarray) -> tuple[R.Mixture, dict]:
    """The learned gate fitted on the ``used`` samples of ``data["valid"]`` (``x``: split -> :func:`gate_features`,
    ``base``: the validation ranking, ``inputs`` / ``feats``: its repeat inputs and features): the mixture
    (per-behavior temperature) and the gate-logit offset of every sample of each split."""
    valid = data["valid"]
    mean, scale = x["valid"][used].mean(0), x["valid"][used].std(0) + 1e-9
    is_repeat = np.array([any(r) for r in valid.repeat])
    weights = np.zeros((n_behaviors, x["valid"].shape[1] + 1))
    for b in range(n_behaviors):
        rows = used & (valid.sample_behavior == b)
        if rows.any():
            features = torch.from_numpy((x["valid"][rows] - mean) / scale)
            labels = torch.from_numpy(is_repeat[rows].astype(np.float64))
            w = torch.zeros(features.shape[1] + 1, dtype=torch.float64, requires_grad=True)
            optimizer = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

            def loss():
                optimizer.zero_grad()
                value = torch.nn.functional.binary_cross_entropy_with_logits(features @ w[1:] + w[0], labels)
                value = value + 1e-2 * (w[1:] ** 2).sum()
                value.backward()
                return value

            optimizer.step(loss)
            weights[b] = w.detach().numpy()
    logit = {s: weights[d.sample_behavior, 0] + ((x[s] - mean) / scale * weights[d.sample_behavior, 1:]).sum(1)
             for s, d in data.items()}
    best = {b: (-1.0, 0.0, 1.0, 1.0) for b in range(n_behaviors)}
    for shift, stretch, tau in itertools.product((-2, -1, 0, 1, 2, 3, 4), (0.5, 1, 2, 4), grid.temperatures):
        trial = R.Mixture(mix.scorer, [0.0] * n_behaviors, [0.0] * n_behaviors, [tau] * n_behaviors, ranker=mix.ranker)
        value = ndcg(R.mixture_ranking(valid, inputs, base, trial, K, feats,
                                       gate_offset=shift + stretch * logit["valid"]).items, valid)
        for b in range(n_behaviors):
            rows = used & (valid.sample_behavior == b)
            if rows.any() and value[rows].mean() > best[b][0] + 1e-12:
                best[b] = (float(value[rows].mean()), shift, stretch, tau)
    shift, stretch, tau = (np.array([best[b][i] for b in range(n_behaviors)]) for i in (1, 2, 3))
    fitted = R.Mixture(mix.scorer, [0.0] * n_behaviors, [0.0] * n_behaviors, tau.tolist(), ranker=mix.ranker)
    return fitted, {s: shift[d.sample_behavior] + stretch[d.sample_behavior] * logit[s] for s, d in data.items()}


def oracle(data, base: Ranking, rank: int) -> Ranking:
    """Each sample's first explore target moved to ``rank`` of ``base`` (a score just above that slot's)."""
    items, scores = base.items.copy(), base.scores.copy()
    for i, (targets, repeat) in enumerate(zip(data.targets, data.repeat)):
        new = [t for t, r in zip(targets, repeat) if not r]
        if new:
            row = [x for x in items[i] if x != new[0]]
            slot = scores[i][min(rank, len(row) - 1)]
            row.insert(rank, new[0])
            items[i] = row[: items.shape[1]]
            scores[i] = np.r_[scores[i][:rank], slot + 1e-4, scores[i][rank:]][: items.shape[1]]
    return Ranking(items, scores)


def oracle_gate(data, base: Ranking, scorer, ranker, feats, inputs, grid, n_behaviors: int) -> np.ndarray:
    """Per sample, the final list of the (gate, temperature) of the grid that scores best on that sample."""
    best_items, best = None, np.full(data.n_samples, -1.0)
    for g, tau in itertools.product(grid.gates, grid.temperatures):
        bias = np.inf if g >= 1 else float(np.log(g / (1 - g)))
        mix = R.Mixture(scorer, [bias] * n_behaviors, [0.0] * n_behaviors, [tau] * n_behaviors, ranker=ranker)
        items = R.mixture_ranking(data, inputs, base, mix, K, feats).items
        value = ndcg(items, data)
        better = value > best
        best_items = items if best_items is None else np.where(better[:, None], items, best_items)
        best = np.maximum(best, value)
    return best_items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--model", default="gamer")
    parser.add_argument("--baseline", default="sasrec_behavior")
    parser.add_argument("--decoder-version", default=None,
                        help="the decoder_model version of the smb_decoder run (default: the newest, which is another "
                             "protocol's model when mb_decoder ran later in the project)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    project = args.project.resolve()
    catalog, params = catalog_of(project, {"dataset": args.dataset, "model": args.model})
    seq, behaviors = catalog.load("sequences@eager"), catalog.load("behaviors")
    n_items, n_behaviors = catalog.load("items").height, behaviors.height
    levels, max_history = BehaviorTable.from_table(behaviors).levels, params["max_history"]
    grid = validate(RepeatParams, params["repeat"], prefix="repeat.")
    ranked = validate(EvalParams, params["eval"], prefix="eval.")  # the users the project's nodes ranked
    valid, test = (eval_set(seq, "last_session", split, max_history, max_users=ranked.max_users(split))
                   for split in ("valid", "test"))
    model = catalog.load("decoder_model", version=args.decoder_version).eval()
    codes = item_codes(catalog.load("sid_table"))
    vocab = TokenVocab.from_dict(catalog.load("sid_vocab"))
    dec = {s: ranking_from_predictions(catalog.load(f"smb_decoder.{n}"), d)
           for s, n, d in (("valid", "validation_predictions", valid), ("test", "predictions", test))}
    base_catalog, _ = catalog_of(project, {"dataset": args.dataset, "model": args.baseline})
    rec = base_catalog.load("smb_rec.rec_model")
    ref = ndcg(ranking_from_predictions(base_catalog.load("smb_rec.repeat_predictions"), test).items, test)
    rec_rank = {s: ranking_from_predictions(base_catalog.load(f"smb_rec.{n}"), d)
                for s, n, d in (("valid", "validation_predictions", valid), ("test", "predictions", test))}

    scorer, _ = R.fit_repeat_scorer(valid, n_behaviors, n_items, day_decays=grid.day_decays,
                                    session_decays=grid.session_decays, weights=grid.behavior_weights, neighbors=0,
                                    neighbor_weights=[0.0], k=K)
    inputs = {"valid": R.RepeatInputs(valid, n_behaviors), "test": R.RepeatInputs(test, n_behaviors)}
    feats = {s: inputs[s].features(scorer.day_decay, scorer.session_decay) for s in inputs}
    data = {"valid": valid, "test": test}
    full = {s: baseline_logp(rec, data[s], max_history) for s in data}
    rows = []

    def row(name: str, items: np.ndarray, explore: Ranking | None = None) -> None:
        values = ndcg(items, test)
        d = values - ref
        interval = 1.96 * d.std(ddof=1) / np.sqrt(len(d))
        exp = f"{selection_scores(test, explore, K, True)[f'ndcg@{K}']:.4f}" if explore is not None else "–"
        mixed = metrics_by_part(items[:, :K], test.targets, test.repeat, test.sample_behavior, ks=(K,))
        rows.append(f"| {name} | {values.mean():.4f} | {d.mean():+.4f} ± {interval:.4f} | "
                    f"{mixed['explore']['merged'][f'ndcg@{K}']:.4f} | {exp} |")

    def shipped(base):  # the pipeline's mixture, learned repeat ranker included where validation keeps it
        prior = R.item_log_share(training_prefix(seq, "last_session", users="all").item, n_items)
        mix = R.fit_repeat_explore(valid, base["valid"], n_behaviors, n_items, grid, K, item_prior=prior)
        return mix, R.mixture_ranking(test, inputs["test"], base["test"], mix, K, feats["test"]).items

    mix_dec, items = shipped(dec)
    ranker = mix_dec.ranker  # fitted on the validation repeats alone: the same repeat side for every row below

    def fit(base_valid: Ranking, **kwargs) -> R.Mixture:
        kwargs = {"gates": grid.gates, "gate_slopes": grid.gate_slopes, "temperatures": grid.temperatures} | kwargs
        return R.fit_mixture(valid, base_valid, scorer, n_behaviors, k=K, ranker=ranker, inputs=inputs["valid"],
                             **kwargs)

    row(f"{args.model}+repeat (shipped)", items, dec["test"])
    mix_rec, items = shipped(rec_rank)
    row(f"{args.baseline}+repeat (shipped)", items, rec_rank["test"])
    for name, hist in ((args.model, {s: decoder_history_logp(model, data[s], inputs[s], codes, vocab, levels)
                                     for s in data}),
                       (args.baseline, {s: full[s][inputs[s].group_sample, inputs[s].group_item] for s in data})):
        base = dec if name == args.model else rec_rank
        mix, beta, gamma = fit_history_view(valid, feats["valid"], base["valid"], hist["valid"], scorer, ranker, grid,
                                            [0.0, 0.25, 0.5, 1.0], [0.0, 0.5, 1.0, 2.0], n_behaviors)
        row(f"{name}+repeat, model's history view (β {beta}, γ {gamma})",
            mixture(test, feats["test"], base["test"], mix, hist["test"], beta, gamma))

    def decoder_scores(split):
        d = data[split]
        prompts = build_prompts(d.histories, codes, vocab, levels, sessions=d.history_sessions)

        def fn(union):
            pair_sample = np.repeat(np.arange(d.n_samples), union.shape[1])
            return score_items(model, prompts, codes, d.sample_user, d.sample_behavior, pair_sample, union.ravel(),
                               behavior_levels=levels, chunk_rows=4096).reshape(union.shape)
        return fn

    fns = {s: decoder_scores(s) for s in data}
    best = None
    for a in (0.25, 0.5, 0.75):
        poe = {s: product_of_experts(data[s], dec[s], fns[s], full[s], a) for s in data}
        mix = fit(poe["valid"])
        if best is None or mix.validation[f"ndcg@{K}"] > best[0]:
            best = (mix.validation[f"ndcg@{K}"], a, poe, mix)
    _, a, poe, mix = best
    row(f"{args.model} × {args.baseline} explore scores (a = {a}) +repeat",
        R.mixture_ranking(test, inputs["test"], poe["test"], mix, K, feats["test"]).items, poe["test"])
    vectors = np.asarray(catalog.load("item_embeddings"), np.float32)
    knn = {s: recent_items_query(vectors, data[s])[data[s].sample_user] @ vectors.T for s in data}

    def top(scores: np.ndarray, width: int = 50) -> Ranking:
        best = np.argsort(-scores, axis=1)[:, :width]
        return Ranking(best, np.take_along_axis(scores, best, 1))

    knn_rank = {s: top(knn[s]) for s in data}
    mix = fit(knn_rank["valid"], temperatures=[0.02, 0.05, 0.1, 0.2])  # inner products of unit vectors: a sharper scale
    row("item-vector kNN (no training) +repeat",
        R.mixture_ranking(test, inputs["test"], knn_rank["test"], mix, K, feats["test"]).items, knn_rank["test"])
    for name in (args.baseline, args.model):
        best = None
        for t, a in itertools.product((0.05, 0.1), (0.3, 0.5, 0.7)):
            logp = {s: torch.from_numpy(knn[s] / t).log_softmax(-1).numpy() for s in data}
            base = ({s: top(a * full[s] + (1 - a) * logp[s]) for s in data} if name == args.baseline else
                    {s: product_of_experts(data[s], dec[s], fns[s], logp[s], a) for s in data})
            mix = fit(base["valid"])
            if best is None or mix.validation[f"ndcg@{K}"] > best[0]:
                best = (mix.validation[f"ndcg@{K}"], t, a, base, mix)
        _, t, a, base, mix = best
        row(f"{name} × item-vector kNN (temperature {t}, a = {a}) +repeat",
            R.mixture_ranking(test, inputs["test"], base["test"], mix, K, feats["test"]).items, base["test"])
    for name, base in ((args.model, dec),
                       (args.baseline, {s: Ranking(rec_rank[s].items, np.where(
                           rec_rank[s].items >= 0, np.take_along_axis(full[s], np.maximum(rec_rank[s].items, 0), 1),
                           -np.inf)) for s in data})):
        mix = fit(base["valid"], normalize_explore=False)
        row(f"{name}+repeat, absolute explore probabilities",
            R.mixture_ranking(test, inputs["test"], base["test"], mix, K, feats["test"], normalize_explore=False).items)
    for name, base in ((args.model, dec), (args.baseline, rec_rank)):
        row(f"oracle: {name}+repeat, each test sample's best gate and temperature", oracle_gate(test, base["test"],
            scorer, ranker, feats["test"], inputs["test"], grid, n_behaviors))
    for name, base, mix in ((args.model, dec, mix_dec), (args.baseline, rec_rank, mix_rec)):
        x = {}
        for s in data:
            p_rep, total = R.history_distribution(data[s], inputs[s], feats[s], scorer, ranker, None)
            x[s] = gate_features(data[s], feats[s], p_rep, total, R.explore_candidates(data[s], base[s]), n_behaviors)
        fold = valid.sample_user % 2  # held-out comparison: fit on one half of the users, score the other half
        learned, plain = np.zeros(valid.n_samples), np.zeros(valid.n_samples)
        for f in range(2):
            used = fold != f
            gate_mix, offset = fit_learned_gate(data, x, base["valid"], mix, inputs["valid"], feats["valid"], grid,
                                                n_behaviors, used)
            learned[~used] = ndcg(R.mixture_ranking(valid, inputs["valid"], base["valid"], gate_mix, K, feats["valid"],
                                                    gate_offset=offset["valid"]).items, valid)[~used]
            shipped_gate = fit(base["valid"], samples=used)
            plain[~used] = ndcg(R.mixture_ranking(valid, inputs["valid"], base["valid"], shipped_gate, K, feats["valid"]
                                                  ).items, valid)[~used]
        d = learned - plain
        gate_mix, offset = fit_learned_gate(data, x, base["valid"], mix, inputs["valid"], feats["valid"], grid,
                                            n_behaviors, np.ones(valid.n_samples, bool))
        row(f"{name}+repeat, learned gate (on held-out validation users {d.mean():+.4f} ± "
            f"{1.96 * d.std(ddof=1) / np.sqrt(len(d)):.4f} against the shipped gate)",
            R.mixture_ranking(test, inputs["test"], base["test"], gate_mix, K, feats["test"],
                              gate_offset=offset["test"]).items)
    for rank in (0, 4, 9):
        base = oracle(test, dec["test"], rank)
        row(f"oracle: explore target at rank {rank + 1} of {args.model}'s list, its fitted gate",
            R.mixture_ranking(test, inputs["test"], base, mix_dec, K, feats["test"]).items, base)
    print(f"NDCG@{K} on {test.n_samples} test samples of {args.dataset} (last_session); Δ vs {args.baseline}+repeat; "
          f"explore: NDCG@{K} on the explore targets of the final list and of the base list without history "
          "items\n")
    print("| ranking | NDCG@10 | Δ vs baseline+repeat | explore | explore (base) |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
