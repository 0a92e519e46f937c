"""InteractionsExampleGen: a dataset folder -> interaction examples, the item catalog and rejected rows.

Outputs (artifacts):
  examples  Examples, splits `train` and `eval`: gzipped TFRecords of tf.Example under Split-train/ and
            Split-eval/, one example per positive (label 1.0) and per sampled negative (label 0.0), with
            the item's brand, categories and price; its title and text in the eval split only (training
            reads them once per catalog item; see trainer/features.py EXAMPLE_ITEM_FEATURES).
  catalog   Examples, one split `catalog`: one tf.Example per valid item, interactions or not, all of its
            features, and its count of ratings below the threshold when it has any (NEGATIVE_RATINGS:
            seen and not liked, so the Trainer does not take it for a new item).
  rejected  RejectedRows: rejected.jsonl (one bad row per line: source, line, reason, detail, raw) and
            summary.json (rows read/rejected/kept per file, counts per reason, examples per split).
Feature keys and formats: trainer/features.py. Split, history and negative rules: components/interactions.py.

The Beam pipeline: read rows -> parse (bad rows are tagged, never dropped) -> keep the first row of each
item_id -> join interactions with the valid catalog (CoGroupByKey) -> group positives per user -> split
-> count train items for the negative sampler -> per user: positives, negatives and their item features
(catalog as a side input) -> write. Examples come out grouped by user, in no particular user order.

Usage in a pipeline (the parameters are one `ExampleGenConfig`, in components/example_gen_config.py):
  example_gen = InteractionsExampleGen(
      data_dir="/data/amazon-office", config=ExampleGenConfig(num_negatives=4).to_json()
  )
  example_gen.outputs["examples"], example_gen.outputs["catalog"], example_gen.outputs["rejected"]
"""

# No `from __future__ import annotations`: the TFX component decorator reads real annotations.
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import tensorflow as tf
from absl import logging
from apache_beam.io.filesystems import FileSystems
from tfx import v1 as tfx
from tfx.components.util import examples_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact

from components import data_files, data_report, example_encoding, interactions, log_examples
from components.data_files import DatasetFiles, Interaction, Item, RawRow, Rejected
from components.example_gen_config import ExampleGenConfig
from components.interactions import NegativeSampler
from serving import event_log
from trainer import features

REJECTED = "rejected"
BELOW = "below"
TFRECORD_PREFIX = "data_tfrecord"  # the file name stock ExampleGen uses
REJECTED_FILE = "rejected.jsonl"
SUMMARY_FILE = "summary.json"
COUNTS = "counts"


class RejectedRows(Artifact):
    """Rows the example generator refused, with reasons: rejected.jsonl and summary.json."""

    TYPE_NAME = "tailtower.RejectedRows"  # KFP v2 wants custom type names as "<namespace>.<Name>"


class LogSpans(NamedTuple):
    """The service log spans an example generation reads."""

    logs_dir: str
    served: tuple[int, ...]
    events: tuple[int, ...]

    @classmethod
    def choose(cls, logs_dir: str, last: int) -> "LogSpans":
        """The `last` closed spans of served records (0: all of them), and every closed events span from the
        first of those on (a click can land in the span after its list's)."""
        if not os.path.isdir(logs_dir):
            raise FileNotFoundError(f"logs_dir {logs_dir!r} is not a folder (the service's --output/logs)")
        served = event_log.spans(logs_dir, event_log.SERVED)
        served = served[-last:] if last else served
        first = served[0] if served else float("inf")
        events = [span for span in event_log.spans(logs_dir, event_log.EVENTS) if span >= first]
        return cls(logs_dir, tuple(served), tuple(events))

    def of(self, kind: str) -> tuple[int, ...]:
        return self.served if kind == event_log.SERVED else self.events


class OutputUris(NamedTuple):
    """Where the three output artifacts live."""

    examples: str
    catalog: str
    rejected: str

    def split_prefix(self, split: str) -> str:
        uri = self.catalog if split == data_report.CATALOG else self.examples
        return os.path.join(uri, f"Split-{split}", TFRECORD_PREFIX)

    @property
    def rejected_path(self) -> str:
        return os.path.join(self.rejected, REJECTED_FILE)

    @property
    def summary_path(self) -> str:
        return os.path.join(self.rejected, SUMMARY_FILE)


# --- Beam stages (module level so that they pickle) ---------------------------------------------
def _route_item(row: RawRow) -> Iterator[Any]:
    parsed = data_files.parse_item(row)
    if isinstance(parsed, Rejected):
        yield beam.pvalue.TaggedOutput(REJECTED, parsed)
    else:
        yield parsed.item_id, (row.line, parsed, data_files.raw_text(row))


def _keep_first(kv: tuple[str, Iterable[tuple[int, Item, str]]], source: str) -> Iterator[Any]:
    """Keeps the earliest row of an item_id; later ones are duplicate_item_id."""
    item_id, rows = kv
    (first_line, item, _), *later = sorted(rows, key=lambda r: r[0])
    yield item_id, item
    for line, _, raw in later:
        detail = f"item_id {item_id!r} already defined on line {first_line}"
        duplicate = Rejected(source, line, data_files.DUPLICATE_ITEM_ID, detail, raw)
        yield beam.pvalue.TaggedOutput(REJECTED, duplicate)


def _route_interaction(row: RawRow) -> Iterator[Any]:
    parsed = data_files.parse_interaction(row)
    if isinstance(parsed, Rejected):
        yield beam.pvalue.TaggedOutput(REJECTED, parsed)
    else:
        yield parsed.item_id, (parsed, data_files.raw_text(row))


def _keep_known(kv: tuple[str, dict[str, list[Any]]], source: str, threshold: float) -> Iterator[Any]:
    """Interactions of a catalog item pass as positives unless rated below `threshold` (tagged BELOW as
    (source, item_id))."""
    item_id, grouped = kv
    known = bool(list(grouped["item"]))
    for interaction, raw in grouped["rows"]:
        if not known:
            detail = f"item_id {item_id!r} is not in the valid catalog"
            yield beam.pvalue.TaggedOutput(
                REJECTED, Rejected(source, interaction.line, data_files.UNKNOWN_ITEM, detail, raw)
            )
        elif interaction.rating is not None and interaction.rating < threshold:
            yield beam.pvalue.TaggedOutput(BELOW, (source, item_id))
        else:
            yield interaction


def _split_user(
    kv: tuple[str, Iterable[Interaction]], split_mode: str, cut: int | None
) -> tuple[str, list[tuple[Interaction, str]]]:
    user_id, positives = kv
    return user_id, interactions.assign_splits(positives, split_mode, cut)


def _train_items(kv: tuple[str, list[tuple[Interaction, str]]]) -> Iterator[str]:
    for positive, split in kv[1]:
        if split == interactions.TRAIN:
            yield positive.item_id


def _user_examples(
    kv: tuple[str, list[tuple[Interaction, str]]],
    sampler: NegativeSampler,
    item_examples: dict[str, tf.train.Example],
    config: ExampleGenConfig,
) -> Iterator[Any]:
    """One user's serialized examples, tagged by split, plus their label counts tagged COUNTS."""
    stubs = interactions.user_examples(
        kv[0], kv[1], sampler, config.history_length, config.num_negatives, config.seed
    )
    counts: Counter = Counter()
    for stub in stubs:
        with_text = stub.split == interactions.EVAL  # see features.EXAMPLE_ITEM_FEATURES
        example = example_encoding.interaction_example(stub, item_examples[stub.item_id], with_text)
        yield beam.pvalue.TaggedOutput(stub.split, example.SerializeToString())
        counts["positives" if stub.label else "negatives", stub.split] += 1
    for key, n in counts.items():
        yield beam.pvalue.TaggedOutput(COUNTS, (key, n))


def _request_examples(kv: tuple[str, dict[str, list]], shown: str) -> Iterator[Any]:
    """One request id's served record and events → its log-derived stubs; counts tagged COUNTS."""
    _, grouped = kv
    served, events = list(grouped[event_log.SERVED]), list(grouped[event_log.EVENTS])
    if not served:
        yield beam.pvalue.TaggedOutput(COUNTS, (("log_orphan_events",), len(events)))
        return
    yield beam.pvalue.TaggedOutput(COUNTS, (("log_requests",), 1))
    yield from log_examples.request_examples(served, events, shown)


def _log_example(stub: interactions.ExampleStub, item_examples: dict[str, tf.train.Example]) -> Iterator[Any]:
    item = item_examples.get(stub.item_id)
    if item is None:  # no longer in the catalog: nothing to describe it with
        yield beam.pvalue.TaggedOutput(COUNTS, (("log_unknown_items",), 1))
        return
    yield example_encoding.interaction_example(stub, item).SerializeToString()
    yield beam.pvalue.TaggedOutput(COUNTS, (("log_positives" if stub.label else "log_negatives",), 1))


def _item_example(kv: tuple[str, Item]) -> tuple[str, tf.train.Example]:
    return kv[0], example_encoding.item_example(kv[1])


def _copy(example: tf.train.Example) -> tf.train.Example:
    copy = tf.train.Example()
    copy.CopyFrom(example)
    return copy


def _catalog_example(kv: tuple[str, dict[str, list[Any]]]) -> Iterator[bytes]:
    """One catalog item's serialized example, with its count of ratings below the threshold when it has
    any (features.NEGATIVE_RATINGS: catalog examples only, so interaction examples keep the schema's
    features)."""
    _, grouped = kv
    negatives = sum(grouped["negatives"])
    for example in grouped["example"]:
        if negatives:
            example = _copy(example)  # Beam's inputs are read-only
            example.features.feature[features.NEGATIVE_RATINGS].int64_list.value.append(negatives)
        yield example.SerializeToString()


def _count(pcoll: beam.PCollection, label: str, key: Any) -> beam.PCollection:
    """(count key, 1) for every element; `key` is a tuple or a function of the element."""
    return pcoll | f"Count{label}" >> beam.Map(lambda x: (key(x) if callable(key) else key, 1))


# --- the pipeline -------------------------------------------------------------------------------
def _read(p: beam.Pipeline, label: str, path: str) -> beam.PCollection:
    return (
        p
        | f"{label}Path" >> beam.Create([path])
        | f"{label}ReadRows" >> beam.FlatMap(data_files.read_raw_rows)
        | f"{label}Reshuffle" >> beam.Reshuffle()
    )


def _valid_items(p: beam.Pipeline, files: DatasetFiles, counts: list, rejected: list) -> beam.PCollection:
    """(item_id, Item) for every valid, first-seen item."""
    source = posixpath.basename(files.items)
    rows = _read(p, "Items", files.items)
    counts.append(_count(rows, "ItemRows", ("rows_read", source)))
    parsed = rows | "ParseItems" >> beam.FlatMap(_route_item).with_outputs(REJECTED, main="items")
    unique = (
        parsed.items
        | "GroupItemIds" >> beam.GroupByKey()
        | "KeepFirstItem" >> beam.FlatMap(_keep_first, source).with_outputs(REJECTED, main="items")
    )
    rejected += [parsed[REJECTED], unique[REJECTED]]
    return unique.items


def _positives(
    p: beam.Pipeline,
    files: DatasetFiles,
    items: beam.PCollection,
    config: ExampleGenConfig,
    counts: list,
    rejected: list,
) -> tuple[beam.PCollection, beam.PCollection]:
    """Interaction of every valid positive row, and (item_id, its rows rated below the threshold)."""
    source = posixpath.basename(files.interactions)
    rows = _read(p, "Interactions", files.interactions)
    counts.append(_count(rows, "InteractionRows", ("rows_read", source)))
    parse = beam.FlatMap(_route_interaction).with_outputs(REJECTED, main="rows")
    parsed = rows | "ParseInteractions" >> parse
    joined = (
        {"item": items, "rows": parsed.rows}
        | "JoinCatalog" >> beam.CoGroupByKey()
        | "KeepKnown"
        >> beam.FlatMap(_keep_known, source, config.rating_threshold).with_outputs(
            REJECTED, BELOW, main="positives"
        )
    )
    rejected += [parsed[REJECTED], joined[REJECTED]]
    counts.append(_count(joined[BELOW], "Below", lambda s: (data_files.BELOW_RATING_THRESHOLD, s[0])))
    negatives = (
        joined[BELOW]
        | "NegativeItems" >> beam.Map(lambda s: (s[1], 1))
        | "NegativesPerItem" >> beam.CombinePerKey(sum)
    )
    return joined.positives, negatives


def _user_sequences(positives: beam.PCollection, config: ExampleGenConfig) -> beam.PCollection:
    """(user_id, time-ordered [(Interaction, split)])."""
    by_user = (
        positives | "KeyByUser" >> beam.Map(lambda x: (x.user_id, x)) | "GroupByUser" >> beam.GroupByKey()
    )
    if config.split_mode == interactions.LAST_PER_USER:
        return by_user | "Split" >> beam.Map(_split_user, config.split_mode, None)
    # The exact quantile needs all positive times in one place: one int per positive.
    cut = (
        positives
        | "Times" >> beam.Map(lambda x: x.time)
        | "AllTimes" >> beam.combiners.ToList()
        | "TimeCut" >> beam.Map(interactions.time_cut, config.eval_time_quantile)
    )
    return by_user | "Split" >> beam.Map(_split_user, config.split_mode, beam.pvalue.AsSingleton(cut))


def _negative_sampler(sequences: beam.PCollection, config: ExampleGenConfig) -> beam.PCollection:
    """A singleton NegativeSampler over the items with train positives."""
    return (
        sequences
        | "TrainItems" >> beam.FlatMap(_train_items)
        | "TrainCounts" >> beam.combiners.Count.PerElement()
        | "TrainCountDict" >> beam.combiners.ToDict()
        | "Sampler" >> beam.Map(NegativeSampler.from_counts, config.negative_sampling)
    )


def _read_logs(p: beam.Pipeline, logs: LogSpans, kind: str) -> beam.PCollection:
    """(request_id, record) of every `kind` record in the chosen closed spans."""
    return (
        p
        | f"Log{kind}Spans" >> beam.Create(logs.of(kind))
        | f"Read{kind}" >> beam.FlatMap(lambda span: event_log.read_records(logs.logs_dir, kind, [span]))
        | f"Key{kind}" >> beam.Map(lambda record: (record[event_log.REQUEST_ID], record))
    )


def _log_examples(
    p: beam.Pipeline,
    logs: LogSpans,
    item_examples: beam.PCollection,
    config: ExampleGenConfig,
    counts: list,
) -> beam.PCollection:
    """Serialized train examples from the service's logs (components/log_examples.py)."""
    stubs = (
        {kind: _read_logs(p, logs, kind) for kind in event_log.KINDS}
        | "JoinLogs" >> beam.CoGroupByKey()
        | "LogStubs" >> beam.FlatMap(_request_examples, config.log_shown).with_outputs(COUNTS, main="stubs")
    )
    examples = stubs.stubs | "LogExamples" >> beam.FlatMap(
        _log_example, beam.pvalue.AsDict(item_examples)
    ).with_outputs(COUNTS, main="examples")
    counts += [stubs[COUNTS], examples[COUNTS]]
    return examples.examples


def _write_examples(
    sequences: beam.PCollection,
    items: beam.PCollection,
    negatives: beam.PCollection,
    config: ExampleGenConfig,
    uris: OutputUris,
    counts: list,
    logs: LogSpans | None = None,
) -> None:
    """Writes the train/eval splits and the catalog (negatives: (item_id, ratings below the threshold)).

    Items join in as a side input (one tf.Example per item in memory, ~1 KB each): the output stays
    grouped by user, which the Trainer's shuffle buffer mixes easily, whereas a CoGroupByKey on item_id
    would leave every item's examples contiguous (batches full of one item) and cost a shuffle.
    """
    item_examples = items | "ItemExamples" >> beam.Map(_item_example)
    sampler = beam.pvalue.AsSingleton(_negative_sampler(sequences, config))
    encoded = sequences | "Examples" >> beam.FlatMap(
        _user_examples, sampler, beam.pvalue.AsDict(item_examples), config
    ).with_outputs(COUNTS, *interactions.SPLITS)
    counts.append(encoded[COUNTS])
    splits = {split: encoded[split] for split in interactions.SPLITS}
    if logs is not None and logs.served:
        from_logs = _log_examples(sequences.pipeline, logs, item_examples, config, counts)
        splits[interactions.TRAIN] = (splits[interactions.TRAIN], from_logs) | "WithLogs" >> beam.Flatten()
    catalog = (
        {"example": item_examples, "negatives": negatives}
        | "JoinNegatives" >> beam.CoGroupByKey()
        | "SerializeCatalog" >> beam.FlatMap(_catalog_example)
    )
    for split, pcoll in [*splits.items(), (data_report.CATALOG, catalog)]:
        write = beam.io.WriteToTFRecord(uris.split_prefix(split), file_name_suffix=".gz")
        _ = pcoll | f"Write{split}" >> write
        counts.append(_count(pcoll, f"Examples{split}", ("examples", split)))


def build_pipeline(
    p: beam.Pipeline,
    files: DatasetFiles,
    config: ExampleGenConfig,
    uris: OutputUris,
    logs: LogSpans | None = None,
) -> None:
    """Adds the whole example generation to `p`; summary.json is written by the pipeline itself."""
    counts: list[beam.PCollection] = []
    rejected: list[beam.PCollection] = []
    items = _valid_items(p, files, counts, rejected)
    positives, negatives = _positives(p, files, items, config, counts, rejected)
    sequences = _user_sequences(positives, config)
    _write_examples(sequences, items, negatives, config, uris, counts, logs)
    counts.append(_count(sequences, "Users", ("users",)))
    all_rejected = rejected | "FlattenRejected" >> beam.Flatten()
    counts.append(_count(all_rejected, "Rejected", lambda r: ("rejected", r.source, r.reason)))
    _ = (
        all_rejected
        | "RejectedJson" >> beam.Map(Rejected.to_json)
        | "WriteRejected" >> beam.io.WriteToText(uris.rejected_path, num_shards=1, shard_name_template="")
    )
    sources = [posixpath.basename(files.items), posixpath.basename(files.interactions)]
    _ = (
        counts
        | "FlattenCounts" >> beam.Flatten()
        | "SumCounts" >> beam.CombinePerKey(sum)
        | "CountDict" >> beam.combiners.ToDict()
        | "Summary"
        >> beam.Map(data_report.build_summary, sources, config.num_negatives, uris.rejected_path, logs)
        | "SummaryJson" >> beam.Map(lambda s: json.dumps(s, indent=2, sort_keys=True))
        | "WriteSummary" >> beam.io.WriteToText(uris.summary_path, num_shards=1, shard_name_template="")
    )


def generate(
    pipeline: beam.Pipeline, data_dir: str, config: ExampleGenConfig, uris: OutputUris, logs_dir: str = ""
) -> dict[str, Any]:
    """Runs the pipeline, logs the counts, checks the bad share; returns summary.json's content."""
    files = data_files.find_dataset_files(data_dir)
    logging.info("InteractionsExampleGen: reading %s (%s layout) with %s", data_dir, files.layout, config)
    logs = LogSpans.choose(logs_dir, config.log_spans) if logs_dir else None
    if logs is not None:
        logging.info(
            "InteractionsExampleGen: service logs %s: served spans %s, events spans %s",
            logs_dir,
            list(logs.served),
            list(logs.events),
        )
    with pipeline as p:
        build_pipeline(p, files, config, uris, logs)
    with FileSystems.open(uris.summary_path) as f:
        summary = json.load(f)
    for source, counts in summary["files"].items():
        logging.info(
            "InteractionsExampleGen: %s: %d rows read, %d rejected, %d kept",
            source,
            counts["rows_read"],
            counts["rows_rejected"],
            counts["rows_kept"],
        )
    logging.info(
        "InteractionsExampleGen: rejected by reason %s; %d users; examples %s",
        summary["rejected"],
        summary["users"],
        summary["examples"],
    )
    data_report.check_summary(summary, config.max_bad_share)
    return summary


def _mark_examples(examples: Artifact, splits: list[str]) -> None:
    examples.split_names = artifact_utils.encode_split_names(splits)
    examples.span = 0
    examples_utils.set_payload_format(examples, example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE)
    examples_utils.set_file_format(examples, "tfrecords_gzip")


@tfx.dsl.components.component(use_beam=True)
def InteractionsExampleGen(  # noqa: N802 -- TFX names components by their function
    examples: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    catalog: tfx.dsl.components.OutputArtifact[standard_artifacts.Examples],
    rejected: tfx.dsl.components.OutputArtifact[RejectedRows],
    data_dir: tfx.dsl.components.Parameter[str],
    config: tfx.dsl.components.Parameter[str] = "{}",
    logs_dir: tfx.dsl.components.Parameter[str] = "",
    beam_pipeline: tfx.dsl.components.BeamComponentParameter[beam.Pipeline] = None,
) -> None:
    """Reads `data_dir` (see components/data_files.py) and writes examples, catalog and rejected rows.

    `config` is `ExampleGenConfig.to_json()`; fields it leaves out take the dataclass defaults. `logs_dir`,
    when given, is the recommendation service's logs folder: the last `log_spans` closed spans add train
    examples (components/log_examples.py). Fails with BadInputError when a file's share of rejected rows
    exceeds `max_bad_share`.
    """
    uris = OutputUris(examples.uri, catalog.uri, rejected.uri)
    generate(beam_pipeline, data_dir, ExampleGenConfig.from_json(config), uris, logs_dir)
    _mark_examples(examples, list(interactions.SPLITS))
    _mark_examples(catalog, [data_report.CATALOG])
