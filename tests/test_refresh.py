"""Catalog refresh (trainer/refresh.py, trainer/refresh_kit.py) on the tiny model run_fn exports in
tests/test_export.py: the kit it writes, the towers restored exactly, new items encoded, removed ones gone.
The pipeline form (`make refresh`: CatalogRefresh → Pusher) is tested in tests/test_pipeline_e2e.py."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from serving.local_client import LocalClient
from tests.test_export import ITEMS, _item
from trainer import features, refresh, refresh_kit

REMOVED, NEW = ITEMS[0], "n1"


def _row(item: dict) -> dict:
    """A test_export item (tf.Example lists) as an items.jsonl row."""
    value = lambda key: item[key][0].decode()  # noqa: E731
    return {
        features.ITEM_ID: value(features.ITEM_ID),
        features.TITLE: value(features.TITLE),
        features.TEXT: value(features.TEXT),
        features.BRAND: value(features.BRAND),
        features.CATEGORIES: [c.decode() for c in item[features.CATEGORIES]],
        features.PRICE: item[features.PRICE][0],
    }


@pytest.fixture(scope="module")
def refreshed(trained, tmp_path_factory):
    """The tiny model refreshed over a catalog without REMOVED and with NEW (another item's text)."""
    root = tmp_path_factory.mktemp("refresh")
    data = root / "data"
    data.mkdir()
    rows = [_row(_item(i)) for i in ITEMS if i != REMOVED]
    rows.append({**rows[0], features.ITEM_ID: NEW, features.TITLE: "a new pen"})
    (data / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (data / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n")
    out = str(root / "out")
    report = refresh.refresh(trained.serving_dir, str(data), out, str(root / "cache"), max_recall_drop=1.0)
    return out, report


def test_run_fn_writes_a_refresh_kit(trained):
    kit = refresh_kit.read_kit(trained.serving_dir)
    assert kit.config.top_k == 3 and kit.config.embedding_dim == 8  # test_export's custom_config
    assert len(kit.positives[features.ITEM_ID]) == len(kit.positives[features.USER_INDEX]) > 0
    assert kit.eval_positives[features.HISTORY].shape[1] == features.HISTORY_LENGTH


def test_a_model_without_a_kit_is_refused_with_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError, match="no refresh kit"):
        refresh_kit.read_kit(str(tmp_path))


def test_refresh_keeps_the_trained_towers_and_encodes_new_items_by_their_text(trained, refreshed):
    out, report = refreshed
    assert (report.items, report.new_items, report.removed_items) == (len(ITEMS), 1, 1)
    assert report.passed, report.failure
    kept = [i for i in ITEMS if i != REMOVED]
    before = LocalClient(trained.serving_dir).predict(
        {features.ITEM_IDS: kept}, features.ITEM_EMBEDDINGS_SIGNATURE
    )
    after = LocalClient(out).predict(
        {features.ITEM_IDS: [*kept, NEW, REMOVED, "never-seen"]}, features.ITEM_EMBEDDINGS_SIGNATURE
    )
    # The same towers: every kept item's vector is what the trained model gave it.
    np.testing.assert_allclose(
        after[features.EMBEDDINGS][: len(kept)], before[features.EMBEDDINGS], atol=1e-5
    )
    assert after[features.FOUND].tolist() == [True] * (len(kept) + 1) + [False, False]
    new, unknown = after[features.EMBEDDINGS][len(kept)], after[features.EMBEDDINGS][-1]
    assert not np.allclose(new, unknown, atol=1e-4)  # its own text vector, not the shared OOV vector
    # Same text but out of the item vocabulary: the text path alone carries it, not the kept item's vector.
    assert not np.allclose(new, after[features.EMBEDDINGS][0], atol=1e-4)


def test_the_refreshed_model_recommends_new_items_never_removed_ones(refreshed):
    out, _ = refreshed
    client = LocalClient(out)
    only = lambda ids: refresh.base_recommend(client, ["u0"], [["i1"]], 3, allowed_ids=[ids])[0]  # noqa: E731
    assert only([NEW])[0] == NEW
    assert set(only([REMOVED])) == {""}
    with open(f"{out}/{features.ASSETS_EXTRA_DIR}/{features.CATALOG_METADATA_FILE}", encoding="utf-8") as f:
        rows = {row[features.ITEM_ID]: row for row in map(json.loads, f)}
    assert REMOVED not in rows and rows[NEW][features.IS_NEW] and rows[NEW][features.TITLE] == "a new pen"
    assert refresh_kit.has_kit(out)  # a refreshed version can be refreshed again


def test_a_removed_item_in_a_history_still_adds_its_neighbours_to_the_item_item_term(trained, refreshed):
    out, _ = refreshed
    assert REMOVED.encode() in set(refresh_kit.read_kit(trained.serving_dir).positives[features.ITEM_ID])
    loaded = LocalClient(out).loaded
    catalog = [item.decode() for item in loaded.catalog_ids.numpy()]
    # Its row follows the catalog's in the item-item table: a source for histories, never a candidate.
    sources = tf.raw_ops.LookupTableFindV2(  # a restored table has no lookup method
        table_handle=loaded.history_sources.resource_handle,
        keys=tf.constant([REMOVED, NEW, "never-seen"]),
        default_value=tf.constant(-1, tf.int64),
    ).numpy()
    assert sources.tolist() == [len(catalog), catalog.index(NEW), -1]
    assert loaded.neighbour_rows.shape[0] == len(catalog) + 1
    assert (loaded.neighbour_rows.numpy() < len(catalog)).all()


def test_a_refresh_refuses_a_bert_the_model_was_not_trained_with(trained, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained.serving_dir, model_dir)
    kit = model_dir / features.ASSETS_EXTRA_DIR / features.REFRESH_KIT_DIR
    (kit / refresh_kit.BERT_DIGEST_FILE).write_text(json.dumps({refresh_kit.BERT_DIGEST: "0" * 64}))
    data = tmp_path / "data"
    data.mkdir()
    (data / "items.jsonl").write_text(json.dumps(_row(_item(ITEMS[0]))) + "\n")
    (data / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n")
    with pytest.raises(ValueError, match="not the one this model was trained with"):
        refresh.refresh(str(model_dir), str(data), str(tmp_path / "out"), "", max_recall_drop=1.0)


def test_a_refresh_keeps_items_the_kit_saw_without_a_positive_out_of_the_text_fill(trained, tmp_path):
    assert refresh_kit.read_kit(trained.serving_dir).seen_ids == frozenset()  # test_export's data: no ratings
    current = str(tmp_path / "current")
    shutil.copytree(trained.serving_dir, current)
    os.remove(f"{refresh_kit.kit_dir(current)}/{refresh_kit.SEEN_FILE}")
    assert refresh_kit.read_kit(current).seen_ids == frozenset()  # a kit from before the file
    np.savez(
        f"{refresh_kit.kit_dir(current)}/{refresh_kit.SEEN_FILE}", **{features.ITEM_ID: np.array([b"i9"])}
    )
    assert refresh_kit.read_kit(current).seen_ids == {b"i9"}
    data = tmp_path / "data"
    data.mkdir()
    rows = [_row(_item(i)) for i in ITEMS]
    (data / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (data / "interactions.tsv").write_text("user_id\titem_id\trating\ttime\n")
    out = str(tmp_path / "out")
    refresh.refresh(current, str(data), out, str(tmp_path / "cache"), max_recall_drop=1.0)
    plain = str(tmp_path / "plain")
    refresh.refresh(trained.serving_dir, str(data), plain, str(tmp_path / "cache"), max_recall_drop=1.0)

    def filled(model_dir: str) -> int:
        path = f"{model_dir}/{features.ASSETS_EXTRA_DIR}/{features.BLEND_SUMMARY_FILE}"
        return json.loads(open(path).read())["text_filled_items"]

    assert filled(plain) >= 1 and filled(out) == filled(plain) - 1
