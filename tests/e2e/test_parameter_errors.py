"""`kedro run` with a wrong parameter: one red line that says what is wrong, exit code 2, no traceback, and
nothing runs (no node, no MLflow run, no model published).  The parameters are checked before the run starts,
so each case costs only Kedro's start-up; the cases run side by side in one throwaway project."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from seqrec_pipeline.params import DISCRIMINATIVE_MODELS, GENERATIVE_MODELS, RULE_MODELS

from .conftest import make_project

CASES = {
    **{f"model=foo ({pipeline})": (pipeline, "model=foo",
                                   f"unknown model 'foo' for pipeline {pipeline}; choose one of {list(models)}")
       for pipeline, models in (("smb_decoder", GENERATIVE_MODELS), ("smb_rule", RULE_MODELS),
                                ("smb_rec", DISCRIMINATIVE_MODELS))},
    "model_preset=foo": ("smb_decoder", "model_preset=foo",
                         "invalid parameters: 'model_preset': Input should be 'cpu-small' or 'paper' (got 'foo')"),
    "split.protocol=foo": ("smb_decoder", "split.protocol=foo",
                           "invalid parameters: 'split.protocol': Input should be 'last_session' or 'last_event' "
                           "(got 'foo')"),
    "max_history=-1": ("smb_decoder", "max_history=-1",
                       "invalid parameters: 'max_history': Input should be greater than or equal to 1 (got -1)"),
    "max_history=0": ("smb_decoder", "max_history=0",
                      "invalid parameters: 'max_history': Input should be greater than or equal to 1 (got 0)"),
    "augment=-1": ("smb_decoder", "augment=-1",
                   "invalid parameters: 'augment': Input should be greater than or equal to 0 (got -1)"),
    "seed=abc": ("smb_decoder", "seed=abc",
                 "invalid parameters: 'seed': Input should be a valid integer, unable to parse string as an integer "
                 "(got 'abc')"),
    "tokenizer=foo": ("smb_decoder", "tokenizer=foo",
                      "invalid parameters: 'tokenizer': Input should be 'rqkmeans', 'rqvae', 'cid', 'rid' or 'given' "
                      "(got 'foo')"),
    "trian.epochs=1": ("smb_decoder", "trian.epochs=1",
                       "invalid parameters: unknown parameter 'trian.epochs'; did you mean 'train.epochs'?"),
    "train.epochs=0": ("smb_decoder", "train.epochs=0",
                       "invalid parameters: 'train.epochs': Input should be greater than or equal to 1 (got 0)"),
    "models.gamer.hiden_size=8": ("smb_decoder", "models.gamer.hiden_size=8",
                                  "invalid parameters: models.gamer: unknown gamer config fields ['hiden_size']; did "
                                  "you mean 'hidden_size'?"),
    "models.qwen3.item_head=true": ("smb_decoder", "models.qwen3.item_head=true",
                                    "invalid parameters: models.qwen3: unknown qwen3 config fields ['item_head']"),
    "models.gamer.item_head=maybe": ("smb_decoder", "models.gamer.item_head=maybe",
                                     "invalid parameters: models.gamer: item_head must be true, false or auto, got "
                                     "'maybe'"),
    "models.gamer.item_head_max_items=-1": ("smb_decoder", "models.gamer.item_head_max_items=-1",
                                            "invalid parameters: models.gamer: item_head: auto needs "
                                            "item_head_max_items, the largest catalog that gets the head (an integer "
                                            ">= 0), got -1"),
    "models.gamer.hidden_size=abc": ("smb_decoder", "models.gamer.hidden_size=abc",
                                     "invalid parameters: models.gamer: invalid gamer config: Validation error for "
                                     "field 'hidden_size': TypeError: Field 'hidden_size' expected int, got str "
                                     "(value: 'abc')"),
    "rec.models.sasrec.hidden=8": ("smb_rec", "model=sasrec,rec.models.sasrec.hidden=8",
                                   "invalid parameters: rec.models.sasrec: unknown option(s) ['hidden'] for sasrec; "
                                   "valid options: hidden_size, n_layers, n_heads, inner_size, dropout, hidden_act, "
                                   "default_target_behavior, loss_type"),
    "repeat.successors=0": ("smb_rule", "model=item_knn,repeat.successors=0",
                            "invalid parameters: 'repeat.successors': Input should be greater than or equal to 1 "
                            "(got 0)"),
    "eval.beam_size=5": ("smb_decoder", "eval.beam_size=5",
                         "invalid parameters: 'eval': eval.beam_size (5) must be >= the largest eval.topk (10): beam "
                         "search returns at most beam_size items"),
}


@pytest.fixture(scope="module")
def refused(tmp_path_factory, shared_data):
    project = make_project(tmp_path_factory.mktemp("params"), shared_data)
    # a first run creates the MLflow store, whose creation logs a few lines of its own
    project.run("run", "--pipeline=smb_rule", "--params=dataset=retail_ci,model=foo")

    def run(case):
        pipeline, params, _ = CASES[case]
        return project.run("run", f"--pipeline={pipeline}", f"--params=dataset=retail_ci,{params}")

    with ThreadPoolExecutor(max_workers=3) as pool:  # start-up is mostly imports: a few at a time
        results = dict(zip(CASES, pool.map(run, CASES)))
    return project, results


@pytest.mark.parametrize("case", list(CASES))
def test_a_wrong_parameter_is_one_line_and_exit_code_2(refused, case):
    _, results = refused
    result = results[case]
    assert result.returncode == 2, result.stderr[-3000:]
    assert [line for line in result.stderr.splitlines() if line.strip()] == [f"seqrec_pipeline: {CASES[case][2]}"]
    assert "Traceback" not in result.stdout + result.stderr
    assert "Running node" not in result.stdout  # refused before any node ran


def test_refused_runs_publish_no_model_and_log_no_mlflow_run(refused):
    project, _ = refused
    assert project.mlflow("select count(*) from runs") == [(0,)]  # in particular none FINISHED (train.epochs=0)
    assert project.mlflow("select name from experiments where name = 'retail_ci'") == [("retail_ci",)]
    assert not list((project.path / "data" / "06_models").rglob("model"))
    assert not list((project.path / "data" / "08_reporting").rglob("metrics.json"))
