import pytest

from seqrec_pipeline.dataset_spec import SINGLE_BEHAVIOR, resolve_dataset
from seqrec_pipeline.errors import InputError


def test_defaults_and_derived_fields():
    spec = resolve_dataset("x", {"x": {"events": "e.csv", "behaviors": {"view": 0, "cart": 1, "buy": 2}}})
    assert str(spec.raw_dir) == "data/01_raw/x"
    assert spec.target_behavior == "buy"
    assert spec.filters.min_sessions == 3 and spec.session_gap_minutes == 30
    assert spec.on_invalid == "quarantine"


def test_single_behavior_has_one_implicit_behavior():
    spec = resolve_dataset("x", {"x": {"events": "e.csv"}})
    assert spec.behavior_levels == {SINGLE_BEHAVIOR: 0}
    assert not spec.is_multi_behavior


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(InputError, match=r"'nope' is not declared \(known: a, b\).*conf/local"):
        resolve_dataset("nope", {"a": {}, "b": {}})


def test_two_behaviors_at_top_level_is_rejected_with_fix():
    with pytest.raises(InputError, match=r"exactly one behavior must hold the top level 2.*\['cart', 'buy'\]"):
        resolve_dataset("x", {"x": {"events": "e.csv", "behaviors": {"view": 0, "cart": 2, "buy": 2}}})


def test_typos_in_declaration_are_named():
    with pytest.raises(InputError, match="session_gap_minuts"):
        resolve_dataset("x", {"x": {"events": "e.csv", "session_gap_minuts": 5}})
    with pytest.raises(InputError, match="unknown canonical column"):
        resolve_dataset("x", {"x": {"events": "e.csv", "columns": {"usr": "u"}}})
    with pytest.raises(InputError, match="needs `events"):
        resolve_dataset("x", {"x": {}})


def test_time_window_is_utc_with_offsets_and_whole_end_day():
    spec = resolve_dataset("x", {"x": {"events": "e.csv", "time_window": ["2017-11-25T00:00:00+08:00", "2017-12-03"]}})
    start, end = spec.window_seconds()
    assert start == 1511539200  # 2017-11-24 16:00 UTC
    assert end == 1512345599  # 2017-12-03 23:59:59 UTC
    with pytest.raises(InputError, match="time_window"):
        resolve_dataset("x", {"x": {"events": "e.csv", "time_window": ["2017-12-03", "2017-11-25"]}})


def test_plausible_time_defaults_to_1990_until_tomorrow_and_can_be_widened_or_turned_off():
    import time

    start, end = resolve_dataset("x", {"x": {"events": "e.csv"}}).plausible_seconds()
    assert start == 631152000  # 1990-01-01 UTC
    assert 86400 - 60 < end - time.time() <= 86400
    wide = resolve_dataset("x", {"x": {"events": "e.csv", "plausible_time": ["1970-01-01", "2100-01-01"]}})
    assert wide.plausible_seconds() == (0, 4102531199)
    assert resolve_dataset("x", {"x": {"events": "e.csv", "plausible_time": False}}).plausible_seconds() is None
    with pytest.raises(InputError, match=r"plausible_time end 1980-01-01 is before start 1990-01-01"):
        resolve_dataset("x", {"x": {"events": "e.csv", "plausible_time": ["1990-01-01", "1980-01-01"]}})
    with pytest.raises(InputError, match=r"plausible_time: Value error, give \[start, end\] .* or false"):
        resolve_dataset("x", {"x": {"events": "e.csv", "plausible_time": True}})
