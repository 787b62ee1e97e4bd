import json

import polars as pl
import pytest

from seqrec_pipeline.dataset_spec import resolve_dataset
from seqrec_pipeline.errors import InputError
from seqrec_pipeline.io.readers import read_events, read_items, read_table_file


def _spec(tmp_path, **decl):
    return resolve_dataset("d", {"d": {"path": str(tmp_path), **decl}})


def test_csv_with_column_mapping(tmp_path):
    (tmp_path / "e.csv").write_text("user,item,behavior,timestamp\n0,3,view,1433221969\n0,1,cart,1433222104\n")
    raw = read_events(_spec(tmp_path, events="e.csv", columns={"user_id": "user", "item_id": "item"},
                            behaviors={"view": 0, "cart": 1}))
    assert raw.rows.columns == ["user_id", "item_id", "behavior", "timestamp", "source_row"]
    assert raw.rows["item_id"].to_list() == ["3", "1"]
    assert raw.rows["source_row"].to_list() == [1, 2]
    assert raw.unreadable.height == 0


def test_ragged_lines_are_reported_with_line_text(tmp_path):
    (tmp_path / "e.csv").write_text("a,b,c\n1,2,3\n4,5\n6,7,8\n9,10,11,12\n13,14,15")
    raw = read_table_file(tmp_path / "e.csv")
    assert raw.rows["a"].to_list() == ["1", "6", "13"]
    assert raw.rows["source_row"].to_list() == [1, 3, 5]
    assert raw.unreadable["source_row"].to_list() == [2, 4]
    assert raw.unreadable["raw_line"].to_list() == ["4,5", "9,10,11,12"]
    assert raw.unreadable["reason"][0] == "malformed line: expected 3 fields, found 2"


def test_recbole_typed_header_is_stripped(tmp_path):
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t5\t881250949\n")
    raw = read_table_file(tmp_path / "x.inter")
    assert raw.rows.columns[:4] == ["user_id", "item_id", "rating", "timestamp"]


def test_parquet_and_jsonl(tmp_path):
    pl.DataFrame({"user_id": [1, 2], "item_id": [5, 6], "timestamp": [10, 20]}).write_parquet(tmp_path / "e.parquet")
    raw = read_table_file(tmp_path / "e.parquet")
    assert raw.rows["user_id"].to_list() == ["1", "2"] and raw.rows["source_row"].to_list() == [1, 2]
    (tmp_path / "e.jsonl").write_text('{"user_id": 1, "item_id": "a", "timestamp": 5}\n{"user_id": 2, "item_id"\n')
    raw = read_table_file(tmp_path / "e.jsonl")
    assert raw.rows.height == 1 and raw.unreadable["source_row"].to_list() == [2]
    assert raw.unreadable["reason"][0].startswith("malformed JSON line")


def test_missing_file_and_missing_column_messages(tmp_path):
    with pytest.raises(InputError, match=r"Data file not found: .*nope\.csv.*data/01_raw"):
        read_events(_spec(tmp_path, events="nope.csv"))
    (tmp_path / "e.csv").write_text("usr,item_id,timestamp\n1,2,3\n")
    with pytest.raises(InputError, match=r"missing required column\(s\) user_id \(column 'user_id'\).*`columns:"):
        read_events(_spec(tmp_path, events="e.csv"))


def test_headerless_taobao_head_real_file(shared_data):
    spec = resolve_dataset("t", {"t": {
        "path": str(shared_data / "taobao_head"), "events": "UserBehavior.csv", "header": False,
        "column_names": ["user_id", "item_id", "category_id", "behavior", "timestamp"],
        "behaviors": {"pv": 0, "fav": 1, "cart": 1, "buy": 2}}})
    raw = read_events(spec)
    assert raw.rows.height == 84475
    # the real file ends in a truncated row: reported, not dropped, not a crash
    assert raw.unreadable.height == 1
    assert raw.unreadable["source_row"][0] == 84476
    assert raw.unreadable["raw_line"][0] == "100370,1968385,1875258,pv"


def _write_json(path, obj):
    path.write_text(json.dumps(obj, indent=4))


def test_gamer_json_single_real_scientific(shared_data):
    spec = resolve_dataset("scientific", {"scientific": {"path": str(shared_data / "scientific"),
                                                          "format": "gamer_json", "prefix": "Scientific",
                                                          "timestamp_unit": "order"}})
    raw = read_events(spec)
    assert raw.rows.height == 58492 and raw.rows["user_id"].n_unique() == 8317
    first_user = raw.rows.filter(pl.col("user_id") == raw.rows["user_id"][0])
    assert first_user["timestamp"].to_list() == [str(i) for i in range(first_user.height)]
    items = read_items(spec)
    assert items.height == 4344 and {"title", "description", "brand", "categories"} <= set(items.columns)


def test_gamer_json_smb_and_mb(tmp_path):
    _write_json(tmp_path / "T.SMB.inter.json", {"u1": [0, 1, 2], "u2": [1]})
    _write_json(tmp_path / "T.SMB.behavior.json", {"u1": ["click", "like", "click"], "u2": ["like"]})
    _write_json(tmp_path / "T.SMB.session.json", {"u1": [0, 0, 1], "u2": [0]})
    _write_json(tmp_path / "T.SMB.time.json", {"u1": ["2024-01-01 10:00:00", "2024-01-01 10:05:00",
                                                        "2024-01-02 09:00:00"], "u2": ["2024-01-03 00:00:00"]})
    _write_json(tmp_path / "T.behavior_level.json", {"click": 0, "like": 1})
    spec = resolve_dataset("T", {"T": {"path": str(tmp_path), "format": "gamer_json"}})
    raw = read_events(spec)
    assert raw.behavior_levels == {"click": 0, "like": 1}
    assert raw.rows.select("user_id", "item_id", "behavior", "session_id").rows()[:3] == [
        ("u1", "0", "click", "0"), ("u1", "1", "like", "0"), ("u1", "2", "click", "1")]
    assert raw.rows["timestamp"][2] == "2024-01-02 09:00:00"
    # MB layout (no time file): order is the time
    mb = tmp_path / "mb"
    mb.mkdir()
    _write_json(mb / "T.MB.inter.json", {"u1": [0, 1]})
    _write_json(mb / "T.MB.behavior.json", {"u1": ["click", "like"]})
    _write_json(mb / "T.behavior_level.json", {"click": 0, "like": 1})
    raw = read_events(resolve_dataset("T", {"T": {"path": str(mb), "format": "gamer_json"}}))
    assert raw.rows["timestamp"].to_list() == ["0", "1"] and raw.rows["behavior"].to_list() == ["click", "like"]


def test_gamer_json_lists_must_be_parallel(tmp_path):
    _write_json(tmp_path / "T.MB.inter.json", {"u1": [0, 1]})
    _write_json(tmp_path / "T.MB.behavior.json", {"u1": ["click"]})
    _write_json(tmp_path / "T.behavior_level.json", {"click": 0, "like": 1})
    with pytest.raises(InputError, match=r"not parallel .* user 'u1'"):
        read_events(resolve_dataset("T", {"T": {"path": str(tmp_path), "format": "gamer_json"}}))


def test_items_table_with_text_fields(tmp_path):
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    (tmp_path / "items.tsv").write_text("item_id\ttitle\tgenre\n2\tToy Story\tAnimation\n")
    spec = _spec(tmp_path, events="e.csv", items={"file": "items.tsv", "text_fields": ["title", "genre"]})
    assert read_items(spec).rows() == [("2", "Toy Story", "Animation")]
    bad = _spec(tmp_path, events="e.csv", items={"file": "items.tsv", "text_fields": ["name"]})
    with pytest.raises(InputError, match=r"missing item column\(s\) \['name'\]"):
        read_items(bad)


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path):
    (tmp_path / "e.csv").write_bytes(b"\xef\xbb\xbfuser,item,behavior,timestamp\n0,3,view,1433221969\n")
    raw = read_events(_spec(tmp_path, events="e.csv", columns={"user_id": "user", "item_id": "item"},
                            behaviors={"view": 0}))
    assert raw.rows.row(0) == ("0", "3", "view", "1433221969", 1)
    # headerless: the mark is not part of the first value either
    (tmp_path / "h.csv").write_bytes(b"\xef\xbb\xbf0,3,view,1433221969\n")
    raw = read_events(_spec(tmp_path, events="h.csv", header=False,
                            column_names=["user_id", "item_id", "behavior", "timestamp"], behaviors={"view": 0}))
    assert raw.rows["user_id"].to_list() == ["0"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_blank_lines_are_rejected_and_later_rows_keep_their_numbers(tmp_path, newline):
    lines = ["a,b,c", "1,2,3", "", "4,5,6", " \t", "7,8", "9,10,11", ""]  # the file ends in a blank line
    (tmp_path / "e.csv").write_text(newline.join(lines) + newline, newline="")
    raw = read_table_file(tmp_path / "e.csv")
    assert raw.rows["a"].to_list() == ["1", "4", "9"]
    assert raw.rows["source_row"].to_list() == [1, 3, 6]
    assert raw.unreadable.select("source_row", "reason").rows() == [
        (2, "blank line"), (4, "blank line"), (5, "malformed line: expected 3 fields, found 2"), (7, "blank line")]
    assert raw.rows.height + raw.unreadable.height == 7  # every data line of the file, once


def test_lines_that_are_not_utf8_are_rejected_with_the_byte_and_the_rest_is_read(tmp_path):
    (tmp_path / "e.csv").write_bytes(
        b"a,b,c\n1,caf\xc3\xa9,3\n4,\xff5,6\n7,8\n9,\xc3,11\n12,13,14\n")  # row 3 is also short
    raw = read_table_file(tmp_path / "e.csv")
    assert raw.rows.select("a", "b", "source_row").rows() == [("1", "café", 1), ("12", "13", 5)]
    assert raw.unreadable.select("source_row", "reason", "raw_line").rows() == [
        (2, "invalid UTF-8 at byte 2 of the line (0xff)", "4,\ufffd5,6"),
        (3, "malformed line: expected 3 fields, found 2", "7,8"),
        (4, "invalid UTF-8 at byte 2 of the line (0xc3)", "9,\ufffd,11"),
    ]


def test_declared_encoding_is_read_by_the_careful_reader(tmp_path):
    (tmp_path / "e.csv").write_bytes("a,b\n1,café\n2,x,y\n".encode("latin-1"))
    raw = read_table_file(tmp_path / "e.csv", encoding="latin-1")
    assert raw.rows.select("b", "source_row").rows() == [("café", 1)]
    assert raw.unreadable["source_row"].to_list() == [2]
    with pytest.raises(InputError, match=r"e\.csv: not valid ascii at byte 9 of the file; set `encoding:`"):
        read_table_file(tmp_path / "e.csv", encoding="ascii")


@pytest.mark.parametrize("name, sep, hint", [
    ("e.csv", ";", r"""The file looks ';'-separated: set `sep: ";"` in the dataset declaration\."""),
    ("e.csv", "\t", r"""The file looks '\\t'-separated: set `sep: "\\t"` in the dataset declaration\."""),
    ("e.csv", "|", r"""The file looks '\|'-separated: set `sep: "\|"` in the dataset declaration\."""),
    ("e.tsv", ",", r"""The file looks ','-separated: set `sep: ","` in the dataset declaration\."""),
])
def test_wrong_separator_is_named_in_the_missing_column_message(tmp_path, name, sep, hint):
    from seqrec_pipeline.data.ingest import ingest_events

    (tmp_path / name).write_text(sep.join(["user", "item", "timestamp"]) + "\n" + sep.join(["1", "2", "3"]) + "\n")
    spec = _spec(tmp_path, events=name, columns={"user_id": "user", "item_id": "item"})
    with pytest.raises(InputError, match=r"missing required column\(s\) user_id \(column 'user'\).*; the file has "
                                         r"\['.*'\]\. " + hint + "$"):
        read_events(spec)
    with pytest.raises(InputError, match=hint):  # the streamed reader says the same
        ingest_events(spec)
