"""Typed parameters: the shape of ``conf/base/parameters.yml``, validated.

The yml is the one place that holds defaults; these models hold none (besides optional fields), so a value
missing from the configuration is an error instead of a silent fallback.  Every model forbids unknown keys:
a misspelled ``--params`` key (``trian.epochs=1``) is refused with the closest known key.

Kedro nodes turn their parameter dicts into these objects; a notebook gets the same objects, with the
same values as ``kedro run``, from :func:`load_parameters`::

    from seqrec_pipeline.params import load_parameters
    params = load_parameters({"dataset": "retailrocket", "train.epochs": 3})
    params.train.epochs, params.eval.topk
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seqrec_pipeline.errors import InputError

GENERATIVE_MODELS = ("gamer", "qwen3", "tiger", "tiger_mb", "qwen3_session", "gamer_session", "qwen3_moe",
                     "gamer_action_moe", "qwen3_session_moe", "mbgen")
RULE_MODELS = ("recent", "popularity", "transitions", "tifu", "item_knn")
DISCRIMINATIVE_MODELS = ("sasrec", "bert4rec", "gru4rec", "mbht", "mbstr", "pbat",
                         "sasrec_behavior", "bert4rec_behavior", "gru4rec_behavior")
TOKENIZERS = ("rqkmeans", "rqvae", "cid", "rid", "given")
# the models a pipeline can run (``model=``)
PIPELINE_MODELS = {"smb_rule": RULE_MODELS, "smb_rec": DISCRIMINATIVE_MODELS,
                   "recommend_rec": DISCRIMINATIVE_MODELS, "recommend_rule": ("item_knn",)} | {
    name: GENERATIVE_MODELS
    for name in ("train", "evaluate", "recommend", "smb_decoder", "mb_decoder", "decoder", "__default__")}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitParams(Strict):
    protocol: Literal["last_session", "last_event"]
    train_users: Literal["all", "protocol"]


class DataParams(Strict):
    """Memory of ``ingest`` / ``preprocess``: batches of raw rows, and user buckets (more than one: spilled)."""

    batch_rows: int = Field(ge=1)
    bucket_events: int = Field(ge=1)


class EmbedParams(Strict):
    source: Literal["auto", "text", "cf"]
    encoder: str
    text_fields: list[str] | None
    max_chars: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    cf_dim: int = Field(ge=1)
    cf: Literal["cooccurrence", "user_item"]
    cf_window: int = Field(ge=1)
    cf_chunk_events: int = Field(ge=1)
    cf_solver: Literal["auto", "arpack", "randomized"]
    cf_arpack_max_items: int = Field(ge=0)
    cf_oversample: int = Field(ge=0)
    cf_power_iters: int = Field(ge=0)
    device: str | None


class RQKMeansParams(Strict):
    levels: int = Field(ge=1)
    codebook_size: int | list[int]
    sample_iters: int = Field(ge=0)
    sample_points_per_centroid: int = Field(ge=1)
    full_iters: int = Field(ge=0)
    precision: Literal["auto", "bf16", "fp32"]
    refine_iters: int = Field(ge=0)
    balance_last_level: bool
    n_threads: int = Field(ge=1)
    init: Literal["random", "kmeans++"] | None = None


class CIDParams(Strict):
    base: int = Field(ge=2)
    shuffle: bool


class RIDParams(Strict):
    level_sizes: list[int] = Field(min_length=1)


class GivenParams(Strict):
    file: str | None = None


class TokenizerParams(Strict):
    rqkmeans: RQKMeansParams
    rqvae: dict[str, Any]  # RQVAEConfig fields, validated by the RQ-VAE itself
    cid: CIDParams
    rid: RIDParams
    given: GivenParams


class TrainParams(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_ratio: float = Field(ge=0, le=1)
    patience: int = Field(ge=1)
    select_metric: Literal["ndcg@10", "explore_ndcg@10", "loss"]
    loss_on_repeats: bool
    sample_mode: Literal["auto", "windows", "user", "event"]
    augment_mode: Literal["static", "per_epoch"]
    resume: Literal["auto"] | bool
    log_every: int = Field(ge=0)
    deepspeed_config: str | None
    launch: Literal["auto", "in_process", "subprocess"]
    launcher: Literal["auto", "deepspeed", "torchrun", "python"]
    ranks: int | None = Field(ge=1)

    @model_validator(mode="after")
    def _ranks_need_a_launcher(self) -> TrainParams:
        if self.ranks is not None and self.ranks > 1:
            if self.launch == "in_process":
                raise ValueError(f"train.ranks={self.ranks} needs train.launch=subprocess or auto "
                                 "(one process is one rank)")
            if self.launcher == "python":
                raise ValueError(f"train.ranks={self.ranks} needs train.launcher=deepspeed, torchrun or auto "
                                 "(python starts one process)")
        return self


class EvalParams(Strict):
    beam_size: int = Field(ge=1)
    topk: list[int] = Field(min_length=1)
    batch_size: int = Field(ge=1)
    renormalize: bool
    temperature: float | None = Field(gt=0)
    device: str | None
    valid_users: int | None = Field(ge=1)  # validation sessions ranked (splits.validation_users); None: every user's

    def max_users(self, split: str) -> int | None:
        """``splits.eval_set``'s ``max_users`` for ``split``: the test session is always every user's."""
        return self.valid_users if split == "valid" else None

    @model_validator(mode="after")
    def _beams_cover_the_lists(self) -> EvalParams:
        if min(self.topk) < 1:
            raise ValueError(f"eval.topk cutoffs must be >= 1, got {self.topk}")
        if self.beam_size < max(self.topk):
            raise ValueError(f"eval.beam_size ({self.beam_size}) must be >= the largest eval.topk "
                             f"({max(self.topk)}): beam search returns at most beam_size items")
        return self

    @property
    def k(self) -> int:
        """Length of the ranked lists (the largest cutoff)."""
        return max(self.topk)


class RecParams(Strict):
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    sample_mode: Literal["sequence", "event"]
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    patience: int = Field(ge=1)
    min_epochs: int = Field(ge=0)
    select_metric: Literal["ndcg@10", "explore_ndcg@10"]
    device: str | None
    progress: bool
    models: dict[Literal[DISCRIMINATIVE_MODELS], dict[str, Any]]  # type: ignore[valid-type]


class RepeatParams(Strict):
    """Grids from which the repeat-aware ranking's parameters are chosen on the validation session."""

    day_decays: list[float] = Field(min_length=1)
    session_decays: list[float] = Field(min_length=1)
    behavior_weights: list[float] = Field(min_length=1)
    neighbors: int = Field(ge=0)
    neighbor_weights: list[float] = Field(min_length=1)
    gates: list[float] = Field(min_length=1)
    gate_slopes: list[float] = Field(min_length=1)
    temperatures: list[float] = Field(min_length=1)
    candidates: int = Field(ge=1)
    successors: int = Field(ge=1)
    successor_weights: list[float] = Field(min_length=1)
    successor_windows: list[int] = Field(min_length=1)
    successor_decay: float = Field(gt=0, le=1)
    cooccurrence: int = Field(ge=1)
    cooccurrence_items: int = Field(ge=1)
    cooccurrence_decay: float = Field(gt=0, le=1)
    cooccurrence_weights: list[float] = Field(min_length=1)
    cooccurrence_scales: list[float] = Field(min_length=1)
    knn_neighbors: int = Field(ge=0)
    ranker_l2: float = Field(ge=0)

    @model_validator(mode="after")
    def _ranges(self) -> RepeatParams:
        checks = {"day_decays": all(0 < v <= 1 for v in self.day_decays),
                  "session_decays": all(0 < v <= 1 for v in self.session_decays),
                  "behavior_weights": all(v >= 0 for v in self.behavior_weights),
                  "neighbor_weights": all(0 <= v < 1 for v in self.neighbor_weights),
                  "gates": all(0 < v <= 1 for v in self.gates),
                  "temperatures": all(v > 0 for v in self.temperatures),
                  "successor_weights": all(0 <= v < 1 for v in self.successor_weights),
                  "successor_windows": all(v >= 1 for v in self.successor_windows),
                  "cooccurrence_weights": all(0 <= v < 1 for v in self.cooccurrence_weights),
                  "cooccurrence_scales": all(v > 0 for v in self.cooccurrence_scales)}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"out of range: {bad} (decays and gates in (0, 1], weights >= 0, neighbor and "
                             "successor and co-occurrence weights in [0, 1), successor windows >= 1, temperatures and "
                             "co-occurrence scales > 0)")
        return self


class RecommendParams(Strict):
    """``kedro run --pipeline=recommend``: whom to recommend for, which behaviors, how many items."""

    users: str  # all | a file of raw user ids, one per line
    behaviors: Literal["all"] | list[str]
    k: int = Field(ge=1)  # at most eval.beam_size (checked against the stored model's beam)
    repeat: bool  # rank with the run's repeat / explore head when it has one
    chunk_users: int = Field(ge=1)  # users ranked per step


class CompareParams(Strict):
    k: int = Field(ge=1)


class Parameters(Strict):
    """The whole parameter tree of ``conf/base/parameters.yml`` (``datasets`` are validated by
    ``dataset_spec``, ``models.<name>`` by the model config classes)."""

    dataset: str
    seed: int
    split: SplitParams
    data: DataParams
    tokenizer: Literal[TOKENIZERS]  # type: ignore[valid-type]
    embed: EmbedParams
    tokenizers: TokenizerParams
    model: str
    model_preset: Literal["cpu-small", "paper"]
    models: dict[Literal[GENERATIVE_MODELS], dict[str, Any]]  # type: ignore[valid-type]
    max_history: int = Field(ge=1)
    augment: int = Field(ge=0)
    train: TrainParams
    eval: EvalParams
    protocols: dict[str, Literal["last_event", "last_session"]]
    rec: RecParams
    repeat: RepeatParams
    recommend: RecommendParams
    compare: CompareParams
    datasets: dict[str, Any]


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted parameter path a model knows."""
    out = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        out.append(path)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _fields(annotation, path + ".")
    return out


def _message(error: ValidationError, root: type[BaseModel], what: str, prefix: str = "") -> str:
    known = [prefix + path for path in _fields(root)]
    problems = []
    for item in error.errors():
        path = prefix + ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            for leaf in _leaves(path, item.get("input")):
                close = difflib.get_close_matches(leaf, known, n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                problems.append(f"unknown parameter '{leaf}'{hint}")
        elif item["type"] == "missing":
            problems.append(f"missing parameter '{path}' (set it in conf/base/parameters.yml or conf/local)")
        else:
            value = item.get("input")
            shown = f" (got {value!r})" if not isinstance(value, dict | list) else ""
            problems.append(f"'{path}': {item['msg'].removeprefix('Value error, ')}{shown}")
    return f"invalid {what}: " + "; ".join(problems)


def _leaves(path: str, value: Any) -> list[str]:
    if isinstance(value, dict) and value:
        return [leaf for key, inner in value.items() for leaf in _leaves(f"{path}.{key}", inner)]
    return [path]


def validate(model: type[BaseModel], values: Any, what: str = "parameters", prefix: str = ""):
    """``model.model_validate(values)``, with a user mistake reported as one :class:`InputError` line;
    ``prefix`` is the dotted path of ``values`` in the parameter tree (``"train."``)."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise InputError(_message(error, model, what, prefix)) from None


def check_parameters(params: dict, pipeline: str | None = None) -> Parameters:
    """Validate the whole parameter tree, and ``model`` against the models ``pipeline`` runs (generative
    models unless the pipeline is a baseline; pipelines without a model do not check it)."""
    parsed = validate(Parameters, params)
    _check_model_options(parsed)
    allowed = PIPELINE_MODELS.get(pipeline or "__default__")
    if allowed and parsed.model not in allowed:
        close = difflib.get_close_matches(parsed.model, allowed, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise InputError(f"unknown model '{parsed.model}' for pipeline {pipeline or '__default__'}; choose one of "
                         f"{list(allowed)}{hint}")
    return parsed


def _check_model_options(parsed: Parameters) -> None:
    """``models.<name>`` and ``rec.models.<name>`` against the models' own config / constructor options."""
    from seqrec_pipeline.models.discriminative.registry import check_options
    from seqrec_pipeline.models.generative.factory import check_config

    checks = [(f"models.{name}", check_config, (name, parsed.model_preset, overrides or {}))
              for name, overrides in parsed.models.items()]
    checks += [(f"rec.models.{name}", check_options, (name, overrides or {}))
               for name, overrides in parsed.rec.models.items()]
    for where, check, args in checks:
        try:
            check(*args)
        except InputError as error:
            raise InputError(f"invalid parameters: {where}: {error}") from None


def load_parameters(overrides: dict[str, Any] | None = None, project: str | Path = ".", env: str = "local",
                    pipeline: str | None = None) -> Parameters:
    """The parameters ``kedro run --params=...`` would use, as a :class:`Parameters` object.

    ``overrides`` are dotted keys as on the command line (``{"train.epochs": 3}``); ``project`` is the
    project root (where ``conf/`` is).
    """
    from kedro.config import OmegaConfigLoader

    from seqrec_pipeline.settings import CONFIG_LOADER_ARGS

    runtime: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        node = runtime
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    loader = OmegaConfigLoader(conf_source=str(Path(project) / "conf"), env=env, runtime_params=runtime,
                               **CONFIG_LOADER_ARGS)
    return check_parameters(loader["parameters"], pipeline)


class ModelSpec(Strict):
    """Which generative model to build: name, size preset and config overrides (``models.<name>``)."""

    name: Literal[GENERATIVE_MODELS]  # type: ignore[valid-type]
    preset: Literal["cpu-small", "paper"]
    overrides: dict[str, Any]


class TrainingSettings(Strict):
    """Everything one training of a generative model depends on, besides the data."""

    model: ModelSpec
    protocol: Literal["last_session", "last_event"]
    train_users: Literal["all", "protocol"]
    max_history: int = Field(ge=1)
    augment: int = Field(ge=0)
    seed: int
    train: TrainParams
    beam_size: int = Field(ge=1)  # of the validation beam search (model selection) ...
    valid_users: int | None = Field(ge=1)  # ... over at most this many users' validation sessions

    @classmethod
    def from_parameters(cls, *, model: str, model_preset: str, models: dict | None, protocol: str, train_users: str,
                        max_history: int, augment: int, train: dict, eval: dict, seed: int) -> TrainingSettings:
        ranking = validate(EvalParams, eval, prefix="eval.")
        return validate(cls, {
            "model": {"name": model, "preset": model_preset, "overrides": dict((models or {}).get(model) or {})},
            "protocol": protocol, "train_users": train_users, "max_history": max_history, "augment": augment, "seed": seed, "train": train,
            "beam_size": ranking.beam_size, "valid_users": ranking.valid_users,
        }, "training parameters")
