"""Tests of pipeline/demo/synthetic_data.py: determinism, cold items, popularity skew, preference signal."""

import json
from collections import Counter
from pathlib import Path

import pytest

from components import data_files
from pipeline.demo import synthetic_data


def _read(folder: Path) -> tuple[list[list[str]], list[dict]]:
    lines = (folder / "interactions.tsv").read_text().splitlines()
    assert lines[0] == "user_id\titem_id\trating\ttime"
    items = [json.loads(line) for line in (folder / "items.jsonl").read_text().splitlines()]
    return [line.split("\t") for line in lines[1:]], items


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    counts = synthetic_data.generate(folder)
    return folder, counts, *_read(folder)


def test_same_seed_same_bytes_other_seed_other_data(tmp_path, default_set):
    folder = default_set[0]
    synthetic_data.generate(tmp_path / "again")
    synthetic_data.generate(tmp_path / "other", seed=1)
    for name in ("interactions.tsv", "items.jsonl"):
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
        assert (tmp_path / "other" / name).read_bytes() != (folder / name).read_bytes()


def test_counts_and_layout(default_set):
    _, counts, rows, items = default_set
    expected = {"users": 300, "items": 400, "cold_items": 40, "interactions": len(rows), "categories": 8}
    assert counts == expected
    assert 15 <= len(rows) / 300 <= 25
    assert all(rating == "" for _, _, rating, _ in rows)  # implicit feedback
    by_user = {}
    for user, item, _, time in rows:
        by_user.setdefault(user, []).append((int(time), item))
    for sequence in by_user.values():  # time = 0-based position; no item twice per user
        assert [t for t, _ in sequence] == list(range(len(sequence)))
        assert len({i for _, i in sequence}) == len(sequence)
    assert set(items[0]) == {"item_id", "title", "text", "brand", "categories", "description", "price"}


def test_cold_items_exist_and_stay_in_the_catalog(default_set):
    _, counts, rows, items = default_set
    never_seen = {item["item_id"] for item in items} - {item for _, item, _, _ in rows}
    assert len(never_seen) >= counts["cold_items"] == 40


def test_popularity_is_skewed(default_set):
    _, _, rows, _ = default_set
    counts = sorted(Counter(item for _, item, _, _ in rows).values(), reverse=True)
    top_fifth = sum(counts[: len(counts) // 5]) / sum(counts)
    assert top_fifth > 0.45  # uniform popularity would give ~0.2


def test_users_prefer_one_category(default_set):
    _, _, rows, items = default_set
    category = {item["item_id"]: item["categories"][1] for item in items}
    per_user = {}
    for user, item, _, _ in rows:
        per_user.setdefault(user, Counter())[category[item]] += 1
    shares = [c.most_common(1)[0][1] / sum(c.values()) for c in per_user.values()]
    assert sum(shares) / len(shares) > 0.5  # 8 categories: no preference would give ~0.2


def test_reader_accepts_it_and_ratings_option(tmp_path):
    synthetic_data.generate(tmp_path, num_users=20, num_items=30, rated=True)
    files = data_files.find_dataset_files(str(tmp_path))
    items = [data_files.parse_item(r) for r in data_files.read_raw_rows(files.items)]
    inter = [data_files.parse_interaction(r) for r in data_files.read_raw_rows(files.interactions)]
    assert not [r for r in items + inter if isinstance(r, data_files.Rejected)]
    assert {i.rating for i in inter} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert items[0].text.startswith(f"{items[0].title}. Brand: {items[0].brand}. Categories: Office, ")


def test_cli(tmp_path, capsys):
    synthetic_data.main([str(tmp_path), "--users", "5", "--items", "10", "--seed", "2"])
    assert json.loads(capsys.readouterr().out)["users"] == 5
    assert (tmp_path / "items.jsonl").read_text().count("\n") == 10
