import json

import pytest

from components import data_files
from evaluation import title_only


def test_title_only_copy_keeps_ids_and_titles_and_reads_as_a_dataset(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\nu1\ta\t\t0\nu1\tb\t\t1\n")
    rows = [
        {"item_id": "a", "title": "Red stapler", "brand": "Acme", "categories": "Office, Staplers",
         "description": "A long description."},
        {"item_id": "b", "text": "Text only, no title"},
        {"item_id": "c", "title": "Blue pen", "genres": ["Pens"], "tags": ["ink"], "price": 2.5},
    ]
    (data / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{broken\n")
    out = tmp_path / "title"

    assert title_only.write_title_only(str(data), str(out)) == (2, 2)  # b has no title; the broken row

    files = data_files.find_dataset_files(str(out))
    items = [data_files.parse_item(r) for r in data_files.read_raw_rows(files.items)]
    assert [(i.item_id, i.title, i.brand, i.categories, i.price) for i in items] == [
        ("a", "Red stapler", "", (), 0.0),
        ("c", "Blue pen", "", (), 2.5),
    ]
    assert all("description" not in i.text and "Acme" not in i.text and "Pens" not in i.text for i in items)
    assert (out / "interactions.tsv").read_text() == (data / "interactions.tsv").read_text()
    title_only.write_title_only(str(data), str(out))  # rerun over an existing copy


def test_title_only_refuses_other_layouts(tmp_path):
    (tmp_path / "interactions.csv").write_text("user_id,item_id,time\n")
    (tmp_path / "items.csv").write_text("item_id,title\n")
    with pytest.raises(data_files.DataFileError, match="csv layout"):
        title_only.write_title_only(str(tmp_path), str(tmp_path / "out"))


def test_title_only_refuses_to_write_over_its_own_input(tmp_path):
    (tmp_path / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n")
    (tmp_path / "items.jsonl").write_text('{"item_id": "a", "title": "t"}\n')
    with pytest.raises(ValueError, match="dataset folder itself"):
        title_only.write_title_only(str(tmp_path), str(tmp_path / "." ))
    assert (tmp_path / "items.jsonl").read_text() == '{"item_id": "a", "title": "t"}\n'
