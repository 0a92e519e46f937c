"""trainer.train's inputs: make_dataset reads every record once per epoch and mixes shuffled splits through
the epoch; the cold replay removes items from histories as if never taken."""

import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from trainer import blend, features, item_item, train

SPEC = {"row": tf.io.FixedLenFeature([], tf.int64)}


def _write(path, rows):
    with tf.io.TFRecordWriter(str(path), options="GZIP") as writer:
        for row in rows:
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={"row": tf.train.Feature(int64_list=tf.train.Int64List(value=[row]))}
                )
            )
            writer.write(example.SerializeToString())


def _rows(dataset) -> list[int]:
    return [int(v) for batch in dataset for v in batch["row"].numpy()]


def test_unshuffled_reads_files_in_order(tmp_path):
    _write(tmp_path / "a.gz", range(0, 5))
    _write(tmp_path / "b.gz", range(5, 8))
    assert _rows(train.make_dataset(str(tmp_path / "*.gz"), SPEC, batch_size=3)) == list(range(8))


def test_shuffled_splits_are_mixed_and_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(train, "_SHUFFLE_BUFFER", 200)  # smaller than the data, as on real data
    # A big "train" file and a small "eval" file, as with train_splits=["train", "eval"].
    _write(tmp_path / "train.gz", range(0, 3000))
    _write(tmp_path / "eval.gz", range(3000, 3300))
    patterns = [str(tmp_path / "train.gz"), str(tmp_path / "eval.gz")]
    dataset = train.make_dataset(patterns, SPEC, batch_size=100, shuffle_seed=0)
    rows = np.array(_rows(dataset))
    assert sorted(rows.tolist()) == list(range(3300))  # each record exactly once
    from_eval = rows >= 3000
    # Read one file after the other, the eval rows would all sit in the last ~10% of the epoch (the shuffle
    # buffer mixes only neighbours); drawn in proportion to the file sizes, they spread over the epoch.
    first_half = from_eval[: len(rows) // 2].sum()
    assert 100 <= first_half <= 200, first_half


def test_without_history_items_moves_the_rest_right_and_pads_on_the_left():
    inputs = {
        features.USER_INDEX: np.array([7, 8]),
        features.HISTORY: np.array([[b"", b"a", b"b", b"c"], [b"d", b"e", b"f", b"g"]], object),
        features.HISTORY_INDEX: np.array([[-1, 0, 1, 2], [3, 4, 5, 6]]),
    }
    drop = np.array([[False, False, True, False], [True, False, False, True]])
    out = train.without_history_items(inputs, drop)
    assert out[features.HISTORY].tolist() == [[b"", b"", b"a", b"c"], [b"", b"", b"e", b"f"]]
    assert out[features.HISTORY_INDEX].tolist() == [[-1, -1, 0, 2], [-1, -1, 4, 5]]
    assert out[features.USER_INDEX] is inputs[features.USER_INDEX]
    assert inputs[features.HISTORY][1].tolist() == [b"d", b"e", b"f", b"g"]  # the input is not changed


def test_cold_replay_takes_the_made_cold_items_out_of_the_item_item_table_and_fills_their_popularity():
    # Users 0-2 took items 0 and 1 together, user 3 took items 1 and 2; item 3 was never taken.
    x = item_item.interaction_matrix(
        np.array([0, 0, 1, 1, 2, 2, 3, 3]), np.array([0, 1, 0, 1, 0, 1, 1, 2]), 4
    )
    counts = np.asarray(x.sum(axis=0)).reshape(-1)
    fitted = train.FittedCatalog(x, counts, np.array([False, False, True, True]), counts > 0)
    made_cold = np.array([True, False, False, False])
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]], np.float32)
    validation = blend.Validation(
        np.zeros([1, 4], np.float32), np.array([[1]]), np.array([0]), sp.csr_matrix((1, 4))
    )
    replay = train.cold_replay(fitted, blend.Blend(alpha=0.5), 5, validation, vectors, made_cold)
    assert replay.is_cold.tolist() == [True, False, False, True]  # made cold, and never taken
    assert replay.is_tail.tolist() == [True, False, True, True]  # a cold item is a tail item
    assert (
        item_item.PAD == replay.table.rows[0, 0] and 0 not in replay.table.rows
    )  # no row, no one's neighbour
    assert replay.table.rows[1, 0] == 2  # item 1's neighbour is now item 2 only
    assert replay.fill.cold_rows.tolist() == [0, 3]
    assert replay.fill.rows[0, 0] == 1  # item 0 borrows from its text twin, item 1
    popularity = blend.log_prob(np.where(made_cold, 0, counts))
    assert popularity[2] < replay.log_prob[0] <= popularity[1]  # between its neighbours', nearer item 1's
    no_table = train.cold_replay(fitted, blend.Blend(), 5, validation, vectors, made_cold)
    assert no_table.table.rows.shape == (4, 0)  # alpha 0: the item-item term is off


def test_cold_replay_leaves_an_item_seen_without_a_positive_unfilled_and_not_cold():
    # Item 3 has no positive but was rated below the threshold: seen, so not cold, and it keeps the floor.
    x = item_item.interaction_matrix(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), 4)
    counts = np.asarray(x.sum(axis=0)).reshape(-1)
    seen = np.array([True, True, True, True])
    fitted = train.FittedCatalog(x, counts, np.zeros(4, bool), seen)
    made_cold = np.array([True, False, False, False])
    vectors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 1.0]], np.float32)
    validation = blend.Validation(
        np.zeros([1, 4], np.float32), np.array([[1]]), np.array([0]), sp.csr_matrix((1, 4))
    )
    replay = train.cold_replay(fitted, blend.Blend(alpha=0.5), 5, validation, vectors, made_cold)
    assert replay.is_cold.tolist() == [True, False, False, False]  # made cold (unseen now); 3 was seen
    assert replay.fill.cold_rows.tolist() == [0]
    assert replay.log_prob[3] == blend.log_prob(np.where(made_cold, 0, counts))[3]  # its own: the floor


def test_seen_items_are_those_with_a_positive_or_a_rating_below_the_threshold():
    counts = np.array([3, 0, 0, 1])
    assert train.seen_items(counts, [0, 2, 0, 5]).tolist() == [True, True, False, True]
    assert train.seen_items(counts).tolist() == [True, False, False, True]  # no counts: positives only
