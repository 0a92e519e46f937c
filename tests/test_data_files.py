"""Tests of components/data_files.py: layout detection and one bad-row reason per case."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components import data_files as df

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TSV_HEADER = b"user_id\titem_id\trating\ttime\n"


def _rows(path: Path) -> list[df.RawRow]:
    return list(df.read_raw_rows(str(path)))


def _interaction(line: bytes) -> df.Interaction | df.Rejected:
    header = ("user_id", "item_id", "rating", "time")
    return df.parse_interaction(df.RawRow("interactions.tsv", 2, line, header))


def _item(obj: dict | bytes) -> df.Item | df.Rejected:
    line = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return df.parse_item(df.RawRow("items.jsonl", 3, line))


# --- layout detection -------------------------------------------------------------------------------
def test_missing_folder_names_the_expected_files(tmp_path):
    with pytest.raises(df.DataFileError, match="does not exist.*interactions.tsv \\+ items.jsonl"):
        df.find_dataset_files(str(tmp_path / "nope"))


def test_half_a_layout_names_the_missing_file(tmp_path):
    (tmp_path / "interactions.csv").write_bytes(b"user_id,item_id,time\n")
    with pytest.raises(df.DataFileError, match="no items.csv"):
        df.find_dataset_files(str(tmp_path))


def test_empty_folder_and_two_layouts_are_errors(tmp_path):
    with pytest.raises(df.DataFileError, match="holds no dataset"):
        df.find_dataset_files(str(tmp_path))
    for name in ("interactions.tsv", "items.jsonl", "interactions.csv", "items.csv"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(df.DataFileError, match="several layouts"):
        df.find_dataset_files(str(tmp_path))


def test_detects_each_layout(tmp_path):
    for layout, names in df.LAYOUTS.items():
        folder = tmp_path / layout
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"")
        found = df.find_dataset_files(str(folder))
        assert (found.layout, Path(found.items).name) == (layout, names[1])


# --- interactions -------------------------------------------------------------------------------
def test_valid_interactions_rated_and_implicit():
    assert _interaction(b"u1\ti9\t4.5\t1700000000") == df.Interaction("u1", "i9", 4.5, 1700000000, 2)
    assert _interaction(b"u1\ti9\t\t3") == df.Interaction("u1", "i9", None, 3, 2)
    assert _interaction(b"u1\ti9\t\t3.0").time == 3  # a whole float is an integer time


@pytest.mark.parametrize(
    "line, detail",
    [
        (b"u1\ti9\t3", "expected 4 columns, found 3"),
        (b"u1\ti9\t\tyesterday", "time 'yesterday' is not a number"),
        (b"u1\ti9\t\t3.5", "time '3.5' is not an integer"),
        (b"u1\ti9\tgood\t3", "rating 'good' is not a number"),
        (b"u1\ti9\tnan\t3", "rating 'nan' is not finite"),
        (b"\ti9\t\t3", "empty user_id"),
        (b"u1\t \t\t3", "empty item_id"),
        (b"u1\ti9\t\t", "empty time"),
    ],
)
def test_malformed_interactions(line, detail):
    rejected = _interaction(line)
    assert isinstance(rejected, df.Rejected)
    assert (rejected.reason, rejected.detail, rejected.line) == (df.MALFORMED_ROW, detail, 2)
    assert rejected.raw == line.decode()


def test_not_utf8_interaction_keeps_the_bytes_visible():
    rejected = _interaction(b"u\xff1\ti9\t\t3")
    assert rejected.reason == df.NOT_UTF8
    assert rejected.raw == "u\\xff1\ti9\t\t3"
    assert json.loads(rejected.to_json())["reason"] == "not_utf8"


def test_tsv_file_rows_line_numbers_and_blank_lines(tmp_path):
    path = tmp_path / "interactions.tsv"
    path.write_bytes(TSV_HEADER + b"u1\ta\t\t0\r\n\nu2\tb\t5\t1\n")
    rows = _rows(path)
    assert [(r.line, r.payload) for r in rows] == [(2, b"u1\ta\t\t0"), (4, b"u2\tb\t5\t1")]
    assert [df.parse_interaction(r).rating for r in rows] == [None, 5.0]


def test_byte_order_marks_are_ignored(tmp_path):
    (tmp_path / "interactions.tsv").write_bytes(b"\xef\xbb\xbf" + TSV_HEADER + b"u1\ta\t\t0\n")
    (tmp_path / "items.jsonl").write_bytes(b'\xef\xbb\xbf{"item_id": "a", "title": "Pen"}\n')
    assert df.parse_interaction(_rows(tmp_path / "interactions.tsv")[0]).user_id == "u1"
    assert df.parse_item(_rows(tmp_path / "items.jsonl")[0]).item_id == "a"


def test_header_without_required_column_is_a_file_error(tmp_path):
    path = tmp_path / "interactions.tsv"
    path.write_bytes(b"user\titem_id\ttime\nu1\ta\t0\n")
    with pytest.raises(df.DataFileError, match="missing column\\(s\\) user_id"):
        _rows(path)


# --- items ----------------------------------------------------------------------------------------
def test_item_with_text_and_fields():
    item = _item({"item_id": "a", "title": "Red pen", "text": "Ready text", "brand": "Acme",
                  "categories": ["Pens", "Office"], "price": 2.5})
    assert item == df.Item("a", "Red pen", "Ready text", "Acme", ("Pens", "Office"), 2.5)


def test_item_text_is_composed_when_absent():
    item = _item({"item_id": 7, "title": "Red pen", "brand": "Acme",
                  "categories": "Pens, Office", "description": "Writes well."})
    assert item.item_id == "7"
    assert item.categories == ("Pens", "Office")  # a ", "-separated string (the Amazon layout)
    assert item.text == "Red pen. Brand: Acme. Categories: Pens, Office. Writes well."
    assert (item.brand, item.price) == ("Acme", 0.0)


def test_genres_and_tags_feed_text_and_categories():
    item = _item({"item_id": "1", "title": "Toy Story (1995)", "genres": ["Animation", "Comedy"],
                  "tags": ["pixar"]})
    assert item.categories == ("Animation", "Comedy")
    assert item.text == "Toy Story (1995). Genres: Animation, Comedy. Tags: pixar."
    assert item.brand == ""


@pytest.mark.parametrize(
    "line, reason, detail",
    [
        (b'{"item_id": "a", "title": ', df.MALFORMED_ROW, "bad JSON"),
        (b'["a", "title"]', df.MALFORMED_ROW, "expected a JSON object, found list"),
        (b'{"title": "no id"}', df.MALFORMED_ROW, "empty item_id"),
        (b'{"item_id": "a", "title": "x", "price": -1}', df.MALFORMED_ROW, "price -1.0 is negative"),
        (b'{"item_id": "a", "title": "x", "price": "cheap"}', df.MALFORMED_ROW, "price 'cheap' is not"),
        (b'{"item_id": "a", "title": 5}', df.MALFORMED_ROW, "title should be a string, found int"),
        (b'{"item_id": "a", "title": "x", "categories": [1]}', df.MALFORMED_ROW, "categories should be"),
        (b'{"item_id": "a", "brand": "Acme", "text": " "}', df.EMPTY_TEXT, "neither text nor title"),
        (b'{"item_id": "a", "title": "caf\xe9"}', df.NOT_UTF8, "not UTF-8"),
    ],
)
def test_bad_items(line, reason, detail):
    rejected = _item(line)
    assert isinstance(rejected, df.Rejected)
    assert (rejected.source, rejected.line, rejected.reason) == ("items.jsonl", 3, reason)
    assert detail in rejected.detail


def test_csv_items_with_quoted_newlines_and_pipe_lists(tmp_path):
    path = tmp_path / "items.csv"
    path.write_bytes(
        b'item_id,title,categories,description,price\n'
        b'a,"Pen, red",Pens|Office,"Line one\nline two",1.25\n'
        b'b,Ink,,,\n'
        b'c,too,many,columns,1,2\n'
    )
    parsed = [df.parse_item(row) for row in _rows(path)]
    assert parsed[0] == df.Item("a", "Pen, red", "Pen, red. Categories: Pens, Office. Line one\nline two",
                                "", ("Pens", "Office"), 1.25)
    assert parsed[1] == df.Item("b", "Ink", "Ink.", "", (), 0.0)
    assert (parsed[2].reason, parsed[2].line) == (df.MALFORMED_ROW, 5)  # record a spans lines 2-3


def test_parquet_items_decode_per_value(tmp_path):
    table = pa.table({
        "item_id": pa.array([1, 2], pa.int64()),
        "title": pa.array([b"Pen", b"caf\xe9"], pa.binary()),
        "categories": pa.array([["Pens"], []], pa.list_(pa.string())),
    })
    pq.write_table(table, tmp_path / "items.parquet")
    good, bad = [df.parse_item(row) for row in _rows(tmp_path / "items.parquet")]
    assert good == df.Item("1", "Pen", "Pen. Categories: Pens.", "", ("Pens",), 0.0)
    assert (bad.reason, bad.line) == (df.NOT_UTF8, 2)
    assert json.loads(bad.raw)["title"] == "caf\\xe9"


def test_parquet_interactions(tmp_path):
    table = pa.table({"user_id": ["u1"], "item_id": ["a"], "time": [3], "rating": [None]},
                     schema=pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                                       ("time", pa.int64()), ("rating", pa.float64())]))
    pq.write_table(table, tmp_path / "interactions.parquet")
    (row,) = _rows(tmp_path / "interactions.parquet")
    assert df.parse_interaction(row) == df.Interaction("u1", "a", None, 3, 1)


@pytest.mark.skipif(not (SHARED_DATA / "amazon-office").is_dir(), reason="shared data absent")
def test_amazon_office_reads_without_rejections():
    files = df.find_dataset_files(str(SHARED_DATA / "amazon-office"))
    items = [df.parse_item(row) for row in df.read_raw_rows(files.items)]
    inter = [df.parse_interaction(row) for row in df.read_raw_rows(files.interactions)]
    assert [r for r in items + inter if isinstance(r, df.Rejected)] == []
    assert (len(items), len(inter)) == (2420, 53258)  # data/README.md
    assert {i.item_id for i in inter} <= {i.item_id for i in items}
