import polars as pl
import pytest

from seqrec_pipeline.data.ingest import ingest_stats, parse_timestamps, validate_events
from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.readers import read_events

LEVELS = {"view": 0, "cart": 1, "buy": 2}


def _ingest(tmp_path, text, **decl):
    (tmp_path / "e.csv").write_text(text)
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS, **decl}})
    return validate_events(read_events(spec), spec, spec.behavior_levels)


def test_every_invalid_row_is_quarantined_with_its_reason(tmp_path):
    text = (
        "user_id,item_id,behavior,timestamp\n"
        "1,10,view,1000\n"        # ok
        "1,11,view,abc\n"         # unparseable timestamp
        ",12,view,1001\n"         # missing user
        "2,13,like,1002\n"        # unknown behavior
        "2,14,buy\n"              # truncated line
        "2,15,cart,5000000\n"     # outside the time window
        "3,16,buy,\n"             # missing timestamp
        "3,17,buy,1003\n"         # ok
    )
    valid, rejected = _ingest(tmp_path, text, time_window=["1970-01-01", "1970-01-02"])
    assert valid["item_id"].to_list() == ["10", "17"]
    reasons = dict(zip(rejected["source_row"].to_list(), rejected["reason"].to_list()))
    assert reasons == {
        2: "unparseable timestamp",
        3: "missing user_id",
        4: "unknown behavior (declared: view, cart, buy)",
        5: "malformed line: expected 4 fields, found 3",
        6: "timestamp outside time_window [0, 172799]",
        7: "missing timestamp",
    }
    assert rejected.filter(pl.col("source_row") == 2)["timestamp"][0] == "abc"  # raw value kept
    stats = ingest_stats(valid, rejected)
    assert stats["n_raw"] == 8 == stats["n_valid"] + stats["n_rejected"]


def test_several_problems_in_one_row_are_all_named(tmp_path):
    _, rejected = _ingest(tmp_path, "user_id,item_id,behavior,timestamp\n,10,zap,abc\n1,2,view,1433221969\n")
    assert set(rejected["reason"][0].split("; ")) == {
        "missing user_id", "unknown behavior (declared: view, cart, buy)", "unparseable timestamp"}


def test_fail_policy_stops_naming_file_row_and_problem(tmp_path):
    with pytest.raises(InputError, match=r"1 invalid row\(s\) and on_invalid=fail: e\.csv row 2: unparseable timestamp"):
        _ingest(tmp_path, "user_id,item_id,behavior,timestamp\n1,10,view,1433221969\n1,11,view,x\n",
                on_invalid="fail")


def test_everything_rejected_is_a_structural_error(tmp_path):
    with pytest.raises(InputError, match=r"no valid events \(2 rows, all rejected.*unknown behavior"):
        _ingest(tmp_path, "user_id,item_id,behavior,timestamp\n1,10,click,1\n1,11,click,2\n")


def test_behavior_values_map_ratings_to_behaviors(tmp_path):
    (tmp_path / "r.tsv").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                                    "1\t2\t1\t881250949\n1\t3\t3\t881250950\n1\t4\t5\t881250951\n1\t5\t7\t881250952\n")
    spec = resolve_dataset("d", {"d": {
        "path": str(tmp_path), "events": "r.tsv", "columns": {"behavior": "rating"},
        "behavior_values": {"1": "dislike", "2": "dislike", "3": "neutral", "4": "like", "5": "like"},
        "behaviors": {"dislike": 0, "neutral": 1, "like": 2}}})
    valid, rejected = validate_events(read_events(spec), spec, spec.behavior_levels)
    assert valid["behavior"].to_list() == ["dislike", "neutral", "like"]
    assert rejected["behavior"].to_list() == ["7"] and rejected["reason"][0].startswith("unknown behavior")


@pytest.mark.parametrize("values, unit, expected", [
    (["1433221969", "1433222104"], "auto", [1433221969, 1433222104]),
    (["1433221969123", "1433222104999"], "auto", [1433221969, 1433222104]),
    (["881250949.0", None], "s", [881250949, None]),
    (["2024-01-02 09:00:00", "2024-01-02T09:00:30+00:00"], "iso", [1704186000, 1704186030]),
    (["2024-01-02 09:00:00", "garbage"], "auto", [1704186000, None]),
])
def test_timestamp_parsing(values, unit, expected):
    assert parse_timestamps(pl.Series(values, dtype=pl.Utf8), unit).to_list() == expected


def test_taobao_head_real_file_quarantines_truncated_and_out_of_window_rows(shared_data, tmp_path):
    spec = resolve_dataset("taobao", {"taobao": {
        "path": str(shared_data / "taobao_head"), "events": "UserBehavior.csv", "header": False,
        "column_names": ["user_id", "item_id", "category_id", "behavior", "timestamp"],
        "behaviors": {"pv": 0, "fav": 1, "cart": 1, "buy": 2},
        "time_window": ["2017-11-25T00:00:00+08:00", "2017-12-03T23:59:59+08:00"]}})
    valid, rejected = validate_events(read_events(spec), spec, spec.behavior_levels)
    counts = dict(rejected.group_by("reason").len().rows())
    assert counts == {"malformed line: expected 5 fields, found 4": 1,
                      "timestamp outside time_window [1511539200, 1512316799]": 35}
    assert valid.height + rejected.height == 84476


def test_clean_file_gives_an_empty_rejected_table_with_the_full_schema(tmp_path):
    valid, rejected = _ingest(tmp_path, "user_id,item_id,behavior,timestamp\n1,10,view,1433221969\n1,11,buy,1433221970\n")
    assert valid.height == 2 and rejected.height == 0
    assert rejected.columns == ["source_file", "source_row", "reason", "user_id", "item_id", "behavior",
                                "timestamp", "raw_line"]


def test_streamed_ingest_equals_whole_file_ingest(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    lines = ["user_id,item_id,behavior,timestamp"] + [
        f"{u},{i},{'view' if i % 3 else 'buy'},{1433221969 + u * 10 + i if (u, i) != (3, 4) else 'bad'}"
        for u in range(7) for i in range(9)]
    (tmp_path / "e.csv").write_text("\n".join(lines) + "\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    streamed, rejected_s, levels = ingest_events(spec, batch_rows=10)  # 7 batches
    whole, rejected_w = validate_events(read_events(spec), spec, spec.behavior_levels)
    assert streamed.equals(whole) and rejected_s.equals(rejected_w) and levels == LEVELS
    assert streamed["source_row"].to_list() == [r for r in range(1, 64) if r != 32]
    assert rejected_s.rows() == [("e.csv", 32, "unparseable timestamp", "3", "4", "view", "bad", None)]


def test_streamed_ingest_falls_back_to_the_careful_parser_on_ragged_lines(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    body = "\n".join(f"{u},{u + 1},view,{1433221969 + u}" for u in range(30))
    (tmp_path / "e.csv").write_text("user_id,item_id,behavior,timestamp\n" + body + "\n5,6,view\n1,2,view,7,8\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    events, rejected, _ = ingest_events(spec, batch_rows=8)
    assert events.height == 30
    assert rejected["source_row"].to_list() == [31, 32]
    assert rejected["reason"].to_list() == ["malformed line: expected 4 fields, found 3",
                                            "malformed line: expected 4 fields, found 5"]


@pytest.mark.parametrize("content", [b"user_id,item_id,behavior,timestamp\n", b"user_id,item_id,behavior,timestamp", b""])
def test_header_only_or_empty_csv_is_a_one_line_input_error(tmp_path, content):
    from seqrec_pipeline.data.ingest import ingest_events

    (tmp_path / "e.csv").write_bytes(content)
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    with pytest.raises(InputError, match=r"e\.csv: no data rows \(the file (holds at most a header|is empty)\)") as err:
        ingest_events(spec)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match=r"e\.csv: no data rows"):  # the whole-file reader says the same
        validate_events(read_events(spec), spec, spec.behavior_levels)


def test_blank_line_in_a_streamed_file_keeps_row_numbers_true(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    (tmp_path / "e.csv").write_text("user_id,item_id,behavior,timestamp\n"
                                    "1,10,view,1433221969\n\n2,11,view,1433221970\n3,12,view,abc\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    events, rejected, _ = ingest_events(spec, batch_rows=2)
    assert events["source_row"].to_list() == [1, 3]
    assert sorted(rejected.select("source_row", "reason").rows()) == [(2, "blank line"), (4, "unparseable timestamp")]
    stats = ingest_stats(events, rejected)
    assert stats["n_raw"] == 4 == stats["n_valid"] + stats["n_rejected"]
    with pytest.raises(InputError, match=r"on_invalid=fail: e\.csv row 2: blank line"):
        ingest_events(spec.model_copy(update={"on_invalid": "fail"}))


def test_one_non_utf8_byte_quarantines_its_row_and_the_rest_loads(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    (tmp_path / "e.csv").write_bytes(b"user_id,item_id,behavior,timestamp\n1,10,view,1433221969\n"
                                     b"2,1\xff1,view,1433221970\n3,12,buy,1433221971\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "behaviors": LEVELS}})
    events, rejected, _ = ingest_events(spec)
    assert events.select("item_id", "source_row").rows() == [("10", 1), ("12", 3)]
    assert rejected.select("source_file", "source_row", "reason", "raw_line").rows() == [
        ("e.csv", 2, "invalid UTF-8 at byte 3 of the line (0xff)", "2,1\ufffd1,view,1433221970")]
    with pytest.raises(InputError, match=r"1 invalid row\(s\) and on_invalid=fail: e\.csv row 2: invalid UTF-8 at "
                                         r"byte 3 of the line \(0xff\)\..*declare its `encoding:`"):
        ingest_events(spec.model_copy(update={"on_invalid": "fail"}))


def test_missing_value_spellings_are_missing_ids_not_real_ones(tmp_path):
    text = ("user_id,item_id,behavior,timestamp\n"
            "NaN,10,view,1433221969\nnan,11,view,1433221969\n1,null,view,1433221969\n1,None,view,1433221969\n"
            "1,,view,1433221969\n NULL ,12,view,1433221969\n2,13,view,1433221969\n")
    valid, rejected = _ingest(tmp_path, text)
    assert valid.select("user_id", "item_id").rows() == [("2", "13")]
    assert dict(rejected.select("source_row", "reason").rows()) == {
        1: "missing user_id", 2: "missing user_id", 3: "missing item_id", 4: "missing item_id", 5: "missing item_id",
        6: "missing user_id"}
    assert rejected.filter(pl.col("source_row") == 1)["user_id"][0] == "NaN"  # the raw value is kept


def test_parquet_float_nan_ids_are_missing_and_whole_floats_are_plain_ids(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    pl.DataFrame({"user_id": [1.0, float("nan"), 2.0], "item_id": ["a", "b", None], "behavior": ["view"] * 3,
                  "timestamp": [1433221969] * 3}).write_parquet(tmp_path / "e.parquet")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.parquet", "behaviors": LEVELS}})
    events, rejected, _ = ingest_events(spec)
    assert events.select("user_id", "item_id", "source_row").rows() == [("1", "a", 1)]
    assert rejected.select("source_row", "reason").rows() == [(2, "missing user_id"), (3, "missing item_id")]


IMPLAUSIBLE = "implausible timestamp (outside plausible_time ['1990-01-01', 'now'])"


def test_implausible_timestamps_are_rejected_unless_the_declaration_widens_or_turns_off_the_check(tmp_path):
    # -5: 1969-12-31; 99999999999: year 5138; 631151999: 1989-12-31 23:59:59
    text = "user_id,item_id,behavior,timestamp\n1,10,view,-5\n1,11,view,99999999999\n1,12,view,1433221969\n" \
           "1,13,view,631151999\n"
    valid, rejected = _ingest(tmp_path, text)
    assert valid["source_row"].to_list() == [3]
    assert rejected.select("source_row", "reason", "timestamp").rows() == [
        (1, IMPLAUSIBLE, "-5"), (2, IMPLAUSIBLE, "99999999999"), (4, IMPLAUSIBLE, "631151999")]
    valid, rejected = _ingest(tmp_path, text, plausible_time=["1969-01-01", "5200-01-01"])
    assert valid.height == 4 and rejected.height == 0
    valid, rejected = _ingest(tmp_path, text, plausible_time=False)
    assert valid.height == 4 and rejected.height == 0
    with pytest.raises(InputError, match=r"3 invalid row\(s\) and on_invalid=fail: e\.csv row 1: implausible timestamp"):
        _ingest(tmp_path, text, on_invalid="fail")


def test_a_declared_time_window_replaces_the_plausible_time_check(tmp_path):
    text = "user_id,item_id,behavior,timestamp\n1,10,view,99999999999\n1,11,view,1433221969\n"
    valid, rejected = _ingest(tmp_path, text, time_window=["2015-01-01", "2015-12-31"])
    assert valid["source_row"].to_list() == [2]
    assert rejected["reason"].to_list() == ["timestamp outside time_window [1420070400, 1451606399]"]


def test_order_positions_are_not_held_to_plausible_time(tmp_path):
    from seqrec_pipeline.data.ingest import ingest_events

    (tmp_path / "e.csv").write_text("user_id,item_id\n1,10\n1,11\n2,10\n")
    spec = resolve_dataset("d", {"d": {"path": str(tmp_path), "events": "e.csv", "timestamp_unit": "order"}})
    events, rejected, _ = ingest_events(spec)
    assert events["timestamp"].to_list() == [0, 1, 0] and rejected.height == 0
    # the reference layout without times, even when the declaration does not say `timestamp_unit: order`
    (tmp_path / "T.inter.json").write_text('{"u1": [0, 1, 2], "u2": [1]}')
    spec = resolve_dataset("T", {"T": {"path": str(tmp_path), "format": "gamer_json"}})
    events, rejected, _ = ingest_events(spec)
    assert events["timestamp"].to_list() == [0, 1, 2, 0] and rejected.height == 0


@pytest.mark.parametrize("name, folder, n_raw, rejected_by_reason", [
    ("retailrocket", "retailrocket", 97381, {}),
    ("taobao", "taobao_head", 84476, {"timestamp outside time_window [1511539200, 1512316799]": 35,
                                      "malformed line: expected 5 fields, found 4": 1}),
    ("scientific", "scientific", 58492, {}),  # order only: no plausible-time check
    ("beauty", "beauty", 198502, {}),
])
def test_built_in_declarations_ingest_their_real_data(shared_data, name, folder, n_raw, rejected_by_reason):
    import yaml

    from seqrec_pipeline.data.ingest import ingest_events
    from tests.conftest import REPO

    declared = yaml.safe_load((REPO / "conf/base/parameters_datasets.yml").read_text())["datasets"][name]
    spec = resolve_dataset(name, {name: declared | {"path": str(shared_data / folder)}})
    stats = ingest_stats(*ingest_events(spec)[:2])
    assert stats["n_raw"] == n_raw and stats["rejected_by_reason"] == rejected_by_reason
