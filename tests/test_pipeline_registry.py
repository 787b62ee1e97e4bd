"""The registered pipelines: every one builds, and every free input is a catalog entry, a parameter or raw data."""

from seqrec_pipeline.pipeline_registry import register_pipelines


def test_every_pipeline_builds_and_evaluating_pipelines_report_the_repeat_variant():
    pipelines = register_pipelines()
    assert {"smb_decoder", "mb_decoder", "decoder", "smb_rule", "smb_rec", "compare", "__default__"} <= set(pipelines)
    for name in ("smb_decoder", "mb_decoder", "decoder", "smb_rec"):
        outputs = pipelines[name].all_outputs()
        assert {f"{name}.metrics", f"{name}.repeat_metrics", f"{name}.repeat_head"} <= outputs, name
    assert "smb_rule.metrics" in pipelines["smb_rule"].all_outputs()
    # the evaluated decoder and baseline runs register their MLflow models; each has its batch pipeline
    assert "smb_decoder.served_model" in pipelines["smb_decoder"].all_outputs()
    assert "smb_rec.served_model" in pipelines["smb_rec"].all_outputs()
    assert {"smb_rule.served_model", "smb_rule.fitted"} <= pipelines["smb_rule"].all_outputs()
    assert {"decoder_model", "recommend.repeat_head"} <= pipelines["recommend"].inputs()
    assert {"smb_rec.rec_model", "recommend_rec.repeat_head"} <= pipelines["recommend_rec"].inputs()
    assert "recommend_rule.fitted" in pipelines["recommend_rule"].inputs()
    assert pipelines["compare"].inputs() == {"compare.evaluated_runs", "compare.evaluated_predictions",
                                             "compare.served_models", "params:dataset", "params:compare.k"}
