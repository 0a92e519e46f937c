"""Catalog refresh without retraining: the current model's towers over an updated catalog → a new version.

`refresh` reads the items file of a dataset folder (the updated catalog), encodes its items' text with the
frozen BERT (only what the encoding cache does not hold), rebuilds the model from the current version's
refresh kit (trainer/refresh_kit.py: trained weights, Transform graph, blend, training positives), and
exports a full serving model over the new catalog: new items are out of the item vocabulary, so the
candidate tower carries them by text, brand, categories and price (the cold-item path); items no longer in
the catalog leave the index and the catalog metadata. It then validates the new model against the current
one on the kit's eval positives.

  report = refresh(current_dir, data_dir, out_dir, cache_dir, max_recall_drop=0.02)
  report.passed, report.failure   # push out_dir only if passed

components/catalog_refresh.py runs it as a TFX component; `make refresh` runs that small pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from components import data_files, example_encoding
from evaluation import served_model
from serving.local_client import LocalClient
from serving.recommend_request import knob_names, with_knobs_off
from trainer import bert, blend, encoding_cache, export, features, refresh_kit, train
from trainer.model import TailTowerModel

logger = logging.getLogger(__name__)

VALIDATION_BATCH = 256  # users per `recommend` call when validating


@dataclasses.dataclass
class RefreshReport:
    """What a refresh did and measured; `passed` says whether the new version may be pushed."""

    current_dir: str
    items: int = 0
    new_items: int = 0
    removed_items: int = 0
    rejected_rows: int = 0
    # Eval positives whose item both versions know, and Recall@k of each version on them (new items left
    # out of the refreshed lists).
    common_positives: int = 0
    recall_current: float = 0.0
    recall_refreshed: float = 0.0
    # Eval positives whose item only the refreshed version knows (usually none: new items have no history).
    cold_positives: int = 0
    cold_recall: float | None = None
    passed: bool = False
    failure: str = ""  # why the refreshed version may not be pushed
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def summary(self) -> str:
        recall = (
            f"Recall@k on {self.common_positives} eval positives both versions know: current "
            f"{self.recall_current:.4f}, refreshed {self.recall_refreshed:.4f}"
        )
        cold = (
            "no eval positive of a new item"
            if self.cold_recall is None
            else (f"cold-item Recall@k {self.cold_recall:.4f} on {self.cold_positives} positives")
        )
        timing = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in self.seconds.items())
        verdict = "passed" if self.passed else f"FAILED: {self.failure}"
        return (
            f"{self.items} items ({self.new_items} new, {self.removed_items} removed, {self.rejected_rows} "
            f"rejected rows); {recall}; {cold}; {timing}; validation {verdict}"
        )


def catalog_examples(data_dir: str) -> tuple[list[bytes], int]:
    """The items file of `data_dir` → (serialized catalog tf.Examples, rejected rows), as ExampleGen parses
    it: bad rows are rejected, a repeated item id keeps its first row."""
    files = data_files.find_dataset_files(data_dir)
    examples: dict[str, bytes] = {}
    rejected = 0
    for row in data_files.read_raw_rows(files.items):
        item = data_files.parse_item(row)
        if isinstance(item, data_files.Rejected) or item.item_id in examples:
            rejected += 1
            continue
        examples[item.item_id] = example_encoding.item_example(item).SerializeToString()
    if not examples:
        raise data_files.DataFileError(f"{files.items} has no valid item")
    return list(examples.values()), rejected


def transformed_catalog(
    serialized: Sequence[bytes], kit: refresh_kit.Kit
) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Catalog examples through the kit's Transform graph → (catalog, item metadata), as the Trainer reads
    its catalog (`train.load_catalog`)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "catalog.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for example in serialized:
                writer.write(example)
        return train.load_catalog(path, kit.transform_output)


def restored_model(
    kit: refresh_kit.Kit, catalog: Mapping[str, np.ndarray], cache_dir: str, current_dir: str
) -> TailTowerModel:
    """The kit's trained model over `catalog`: its text encoded (through the cache), every layer built, then
    the trained weights loaded. Items the current version knows but `catalog` lacks keep their text for the
    query tower (histories still hold them), as history-only entries."""
    config = kit.config
    encoder = bert.BertTextEncoder(bert.load_bert(config.bert), config.trainable_bert_layers)
    digest = encoding_cache.weights_digest(encoder)
    if kit.bert_digest and digest != kit.bert_digest:
        raise ValueError(
            f"the BERT at {config.bert} (weights {digest[:12]}) is not the one this model was trained with "
            f"(weights {kit.bert_digest[:12]}): its text vectors would not fit the trained towers"
        )
    text = train.encode_catalog(catalog, encoder, cache_dir)
    sizes = train.vocab_sizes(kit.transform_output)
    history_text = _history_only_text(current_dir, catalog)
    model = train.build_model(config, sizes, catalog, encoder, text, history_text)
    model.compute_loss(_one_example(catalog))  # builds every layer, so the checkpoint has somewhere to go
    refresh_kit.restore_towers(model, kit.towers)
    return model


def _history_only_text(
    current_dir: str, catalog: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, text vectors) the current version's text cache holds for items not in `catalog`."""
    client = LocalClient(current_dir)
    try:
        cached = served_model.cached_text_vectors(client.loaded)
    finally:
        client.close()
    if cached is None:
        return None
    listed = {item.decode() for item in np.asarray(catalog[features.ITEM_ID]).tolist()}
    keep = [row for row, item in enumerate(cached[0]) if item not in listed]
    return np.array([cached[0][row].encode() for row in keep], object), cached[1][keep]


def _one_example(catalog: Mapping[str, np.ndarray]) -> dict[str, tf.Tensor]:
    """A training batch of (at most) two: the first catalog items, taken by users with no history."""
    batch = {key: tf.constant(np.asarray(value)[:2]) for key, value in catalog.items()}
    n = int(batch[features.ITEM_ID].shape[0])
    batch[features.USER_INDEX] = tf.zeros([n], tf.int64)
    batch[features.HISTORY_INDEX] = tf.fill([n, features.HISTORY_LENGTH], tf.constant(-1, tf.int64))
    batch[features.HISTORY] = tf.fill([n, features.HISTORY_LENGTH], "")
    batch[features.LABEL] = tf.ones([n])
    batch[features.POSITION_BUCKET] = tf.zeros([n], tf.int64)
    return batch


def export_refreshed(
    kit: refresh_kit.Kit,
    model: TailTowerModel,
    catalog: Mapping[str, np.ndarray],
    item_metadata: Mapping[str, Sequence],
    out_dir: str,
) -> None:
    """The serving model over the new catalog, its blend tables rebuilt from the kit's training positives."""
    config = kit.config
    ids = np.asarray(catalog[features.ITEM_ID])
    listed = set(ids.tolist())
    # Items trained on but no longer listed stay in the item-item computation, as in training (blend.py).
    gone = sorted({item for item in kit.positives[features.ITEM_ID].tolist() if item not in listed})
    rows = train.CatalogRows(np.concatenate([ids, np.array(gone, object)]))
    x, counts = train.interactions(kit.positives, rows, len(ids) + len(gone))
    vectors = export.candidate_vectors(model, catalog, config.batch_size)
    # Seen: by the new catalog's ratings below the threshold, or by the training data (the kit).
    seen = train.seen_items(counts[: len(ids)], item_metadata[features.NEGATIVE_RATINGS])
    seen |= np.isin(ids, list(kit.seen_ids))
    served = blend.served_blend(
        kit.chosen,
        x,
        counts[: len(ids)],
        vectors,
        config.item_item_neighbours,
        train.pop_scale(config),
        history_only=gone,
        seen=seen,
    )
    export.export_serving_model(
        model,
        kit.transform_output,
        catalog,
        item_metadata,
        out_dir,
        config.top_k,
        served,
        rerank_pool=config.rerank_pool,
        vectors=vectors,
    )


def base_recommend(
    client: LocalClient, users: Sequence[str], histories: Sequence[Sequence[str]], k: int, **filters
) -> list[list[str]]:
    """Item ids of `recommend` with every re-ranking knob off (history excluded): the base ranking."""
    knobs = with_knobs_off({}, knob_names(client.scalar_inputs(features.RECOMMEND_SIGNATURE)))
    return client.recommend(users, histories, k, **knobs, **filters).item_ids()


def recall_at_k(
    client: LocalClient,
    histories: Sequence[Sequence[str]],
    targets: Sequence[str],
    k: int,
    ignore: frozenset[str] = frozenset(),
) -> float:
    """Share of `targets` in the model's `recommend` top k for their histories (users sent as new: ""),
    the items of `ignore` left out: by `recommend`'s exclude_ids filter when they fit in it, else by asking
    for that many more and dropping them."""
    if not targets:
        return 0.0
    fits = len(ignore) <= features.FILTER_MAX_WIDTH[features.EXCLUDE_IDS]
    asked = k if fits else k + len(ignore)  # recommend clamps k to the catalog
    hits = 0
    for lo in range(0, len(targets), VALIDATION_BATCH):
        users = [""] * len(targets[lo : lo + VALIDATION_BATCH])
        filters = {features.EXCLUDE_IDS: [sorted(ignore)] * len(users)} if ignore and fits else {}
        lists = base_recommend(client, users, histories[lo : lo + VALIDATION_BATCH], asked, **filters)
        kept = ([item for item in items if item not in ignore][:k] for items in lists)
        hits += sum(
            target in items for target, items in zip(targets[lo : lo + VALIDATION_BATCH], kept, strict=True)
        )
    return hits / len(targets)


def validate(
    report: RefreshReport,
    kit: refresh_kit.Kit,
    refreshed_dir: str,
    current_ids: set[str],
    new_ids: set[str],
    removed_ids: set[str],
    max_recall_drop: float,
) -> None:
    """Scores both versions on the kit's eval positives; fails when the refreshed one loses more than
    `max_recall_drop` (absolute) Recall@k on the positives of items both know."""
    k = kit.config.top_k
    targets = [item.decode() for item in kit.eval_positives[features.ITEM_ID].tolist()]
    histories = [[i.decode() for i in row if i] for row in kit.eval_positives[features.HISTORY].tolist()]
    known = current_ids - new_ids - removed_ids  # both versions list these
    common = [i for i, target in enumerate(targets) if target in known]
    cold = [i for i, target in enumerate(targets) if target in new_ids]
    report.common_positives, report.cold_positives = len(common), len(cold)
    pick = lambda rows, values: [values[i] for i in rows]  # noqa: E731
    current, refreshed = LocalClient(report.current_dir), LocalClient(refreshed_dir)
    try:
        if not base_recommend(refreshed, [""], [[]], k)[0][0]:  # it loads and answers, whatever is compared
            raise RuntimeError(f"the refreshed model {refreshed_dir} returned an empty list for a new user")
        # Each version's lists without the items only one of them lists (new items may rightly take slots;
        # removed ones are gone by design): this compares what they do with the items both know.
        report.recall_current = recall_at_k(
            current, pick(common, histories), pick(common, targets), k, frozenset(removed_ids)
        )
        report.recall_refreshed = recall_at_k(
            refreshed, pick(common, histories), pick(common, targets), k, frozenset(new_ids)
        )
        if cold:
            report.cold_recall = recall_at_k(refreshed, pick(cold, histories), pick(cold, targets), k)
    finally:
        current.close()
        refreshed.close()
    drop = report.recall_current - report.recall_refreshed
    report.passed = drop <= max_recall_drop
    if not report.passed:
        report.failure = (
            f"Recall@{k} fell by {drop:.4f} (from {report.recall_current:.4f} to "
            f"{report.recall_refreshed:.4f}) "
            f"on the {len(common)} eval positives both versions know; the limit is {max_recall_drop}"
        )


def refresh(
    current_dir: str, data_dir: str, out_dir: str, cache_dir: str, max_recall_drop: float
) -> RefreshReport:
    """Exports the current model (`current_dir`, a version folder with a refresh kit) over the catalog of
    `data_dir` into `out_dir`, and validates it (`report.passed`)."""
    report = RefreshReport(current_dir=current_dir)
    clock = _Clock(report.seconds)
    kit = refresh_kit.read_kit(current_dir)
    serialized, report.rejected_rows = catalog_examples(data_dir)
    catalog, item_metadata = transformed_catalog(serialized, kit)
    clock.lap("read catalog")
    ids = {item.decode() for item in np.asarray(catalog[features.ITEM_ID]).tolist()}
    current_ids = set(export.read_catalog_ids(current_dir))
    new_ids = ids - current_ids
    report.items, report.new_items, report.removed_items = len(ids), len(new_ids), len(current_ids - ids)
    model = restored_model(kit, catalog, cache_dir, current_dir)
    clock.lap("encode and restore")
    export_refreshed(kit, model, catalog, item_metadata, out_dir)
    refresh_kit.copy_kit(current_dir, out_dir)
    clock.lap("export")
    validate(report, kit, out_dir, current_ids, new_ids, current_ids - ids, max_recall_drop)
    clock.lap("validate")
    logger.info("Catalog refresh of %s: %s", current_dir, report.summary())
    return report


class _Clock:
    def __init__(self, laps: dict[str, float]):
        self.laps, self.start = laps, time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name] = now - self.start
        self.start = now
