"""`recommend` against catalog size: a real serving SavedModel over N synthetic items, its size on disk, load
time and latency beside the physical floor (issue 16 §2).

  make bench-scale-serving [ITEMS=10000,100000,1000000]      # → demo-run/bench-scale-serving.md
  python -m serving.bench_scale --items 2000 --text_dtypes float16 --no-grpc --output /tmp/scale.md

What is real: the Trainer's classes and graph — `TailTowerModel` (default `TrainerConfig`, no BERT fallback)
with a `TextVectorCache` of the catalog, a `ServingModule` with the same five signatures as
`export.export_serving_model`, a transform graph from `trainer.preprocessing.preprocessing_fn`, the served
score of the demo model's chosen blend (towers + popularity + item-item over `item_item_neighbours`
neighbours per item, text fill for new items), brand and category facets. What is synthetic: every number —
random text vectors (MiniLM's 384 dims), random unit candidate vectors, random neighbours — and the untrained
weights, which cost the same to run as trained ones. The transform is analysed once on a few rows (so its
vocabularies are small and history ids are mostly OOV to it: the query tower does the same work either way);
the model's own item-id embedding has the catalog's N rows.

Each catalog size is built twice, once per text-cache storage (`TEXT_DTYPES`): float32, what the Trainer
exports, and float16 (`Float16TextCache`, half the bytes, float32 on lookup; not in the Trainer). The text
cache is one table serving two readers in `recommend`: the query tower's history text and the MMR pool.

Tables (printed and written to --output):
  1. per (N, text cache): SavedModel size on disk (variables / graph), the text cache's and the other large
     tables' bytes, build and save time, in-process load time (`LocalClient`: `tf.saved_model.load`) and
     first call, the local model server's time from start to ready and its RSS after its rows.
  2. latency of `recommend` (k, knobs off; one row with mmr_lambda 0.3) through `LocalClient` and the local
     model server over gRPC (serving/bench.py's load runner), p50/p99, next to the floor.
The model server's columns and rows are left out with --no-grpc.

The floor at concurrency c: c·N·d multiply-adds at this machine's fp32 matmul rate (numpy, measured just
before each model's latency rows, since the machine is noisy), and c × numpy's own q·Cᵀ of one query, best
of 50 (a [1, d] × [d, N] product reads all of C: memory-bound, brute force's practical floor at batch 1).
With c requests in flight on the same cores, each waits for the others' work: Little's law makes c × the
one-query cost the floor of each request's latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import dataset_metadata, metadata_io, schema_utils

from pipeline.configs import SCHEMA_FILE
from serving import bench
from serving.config import MODEL_NAME
from serving.grpc_client import GrpcClient
from serving.local_client import LocalClient
from serving.recommend_request import knob_names, with_knobs_off
from trainer import bert, blend, export, features, item_item, preprocessing, train
from trainer.config import TrainerConfig
from trainer.model import TailTowerModel, TextVectorCache

ITEMS = (10_000, 100_000, 1_000_000)
TEXT_DTYPES = ("float32", "float16")
TEXT_DIM = 384  # MiniLM-L6-H384's hidden size: the default BERT's (trainer.config.DEFAULT_BERT) text vectors
CONCURRENCY = (1, 8)
MMR = 0.3  # the re-ranking row's mmr_lambda
NEW_SHARE = 0.01  # items without positives: new, text-filled
TAIL_SHARE = 0.8
BRANDS_PER_ITEM = 0.01  # distinct brands per catalog item
CATEGORIES = 500  # distinct categories; each item has two
HISTORY_POOL = 50  # catalog items the requests' histories are drawn from
MATMUL_SIZE = 1024
MB = 2**20
SEED = 0
logger = logging.getLogger(__name__)
T = TypeVar("T")


# ------------------------------------------------------------------------------------ transform graph
def _raw_metadata():
    """The pipeline's curated raw schema (pipeline/schema/schema.pbtxt) as tf.Transform metadata."""
    with open(SCHEMA_FILE) as f:
        schema = text_format.Parse(f.read(), schema_pb2.Schema())
    return dataset_metadata.DatasetMetadata(schema)


def _rows(spec: Mapping, count: int = 8) -> list[dict]:
    """`count` interactions as tft_beam instances (users u0..u3 on the first catalog items, half positive)."""
    values = {
        features.USER_ID: lambda i: [f"u{i % 4}"],
        features.ITEM_ID: lambda i: [item_id(i)],
        features.HISTORY: lambda i: [item_id(j) for j in range(i)],
        features.TIMESTAMP: lambda i: [i],
        features.LABEL: lambda i: [float(i % 2 == 0)],
        features.TITLE: lambda i: [f"item {i}"],
        features.TEXT: lambda i: ["item words"],
        features.BRAND: lambda i: [f"brand{i % 2}"],
        features.CATEGORIES: lambda i: [f"cat{i % 3}"],
        features.PRICE: lambda i: [float(i + 1)],
    }
    dtypes = {"string": object, "int64": np.int64, "float32": np.float32}
    return [
        {
            name: np.asarray(values.get(name, lambda i: [])(i), dtypes[feature.dtype.name])
            for name, feature in spec.items()
        }
        for i in range(count)
    ]


def tiny_transform(workdir: str) -> str:
    """Analyses `preprocessing_fn` on a few rows (tiny WordPiece vocabulary) → the transform output folder."""
    vocab = os.path.join(workdir, bert.VOCAB_FILE)
    with open(vocab, "w") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "item", "words"]) + "\n")
    metadata = _raw_metadata()
    transform_dir = os.path.join(workdir, "transform")
    config = {preprocessing.BERT_VOCAB: vocab}
    # FnApiRunner: the default DirectRunner first tries to download the Prism runner.
    with (
        beam.Pipeline(runner=FnApiRunner()) as pipeline,
        tft_beam.Context(temp_dir=os.path.join(workdir, "tft")),
    ):
        raw = pipeline | beam.Create(_rows(schema_utils.schema_as_feature_spec(metadata.schema).feature_spec))
        transform_fn = (raw, metadata) | tft_beam.AnalyzeDataset(
            lambda inputs: preprocessing.preprocessing_fn(inputs, config)
        )
        _ = transform_fn | tft_beam.WriteTransformFn(transform_dir)
    # TFX's Transform also writes the raw schema, which TFTransformOutput.raw_feature_spec() reads.
    metadata_io.write_metadata(metadata, os.path.join(transform_dir, tft.TFTransformOutput.RAW_METADATA_DIR))
    return transform_dir


# ------------------------------------------------------------------------------------ synthetic catalog
def item_id(row: int) -> str:
    return f"item{row:07d}"


@dataclasses.dataclass(frozen=True)
class Catalog:
    """N synthetic catalog items, as `ServingModule` takes them."""

    ids: np.ndarray  # [N] object
    text: np.ndarray  # [N, TEXT_DIM] float32
    vectors: np.ndarray  # [N, D] float32, unit length
    is_tail: np.ndarray  # [N] int64 0/1
    is_new: np.ndarray  # [N] bool
    metadata: dict  # BRAND [N] str, CATEGORIES [N] list of str
    served: blend.ServedBlend


def synthetic_catalog(n: int, config: TrainerConfig, seed: int = SEED) -> Catalog:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, config.embedding_dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    is_new = rng.random(n) < NEW_SHARE
    counts = np.where(is_new, 0, rng.geometric(0.2, n))
    cold, warm = np.flatnonzero(is_new).astype(np.int32), np.flatnonzero(~is_new)
    fill = item_item.TextFill(
        cold,
        rng.choice(warm, (len(cold), blend.TEXT_FILL_SIZE)).astype(np.int32),
        np.full((len(cold), blend.TEXT_FILL_SIZE), 1 / blend.TEXT_FILL_SIZE, np.float32),
    )
    neighbours = config.item_item_neighbours
    table = item_item.NeighbourTable(
        rng.integers(0, n, (n, neighbours), dtype=np.int32), rng.random((n, neighbours), dtype=np.float32)
    )
    # The demo model's chosen mix (its assets.extra/blend.json): both extra terms on, so the item-item table
    # and its [B, N] scatter are in the measured graph.
    chosen = blend.Blend(method=item_item.COSINE, recency=0.7, alpha=0.4, gamma=0.25)
    served = blend.ServedBlend(
        chosen, table, fill, item_item.apply_fill(blend.log_prob(counts), fill), config.temperature
    )
    brands = rng.integers(0, max(1, int(n * BRANDS_PER_ITEM)), n)
    categories = rng.integers(0, CATEGORIES, (n, 2))
    return Catalog(
        ids=np.array([item_id(row) for row in range(n)], dtype=object),
        text=rng.standard_normal((n, TEXT_DIM), dtype=np.float32),
        vectors=vectors,
        is_tail=(rng.random(n) < TAIL_SHARE).astype(np.int64),
        is_new=is_new,
        metadata={
            features.BRAND: [f"brand{b}" for b in brands],
            features.CATEGORIES: [[f"cat{c}" for c in row] for row in categories],
        },
        served=served,
    )


# ------------------------------------------------------------------------------------ the serving module
class Float16TextCache(TextVectorCache):
    """`TextVectorCache` storing its vectors as float16 (half the bytes in memory and on disk), read as
    float32: the query tower and MMR see each vector rounded to float16's 11 significant bits."""

    def __init__(self, item_ids: np.ndarray, vectors: np.ndarray):
        super().__init__(item_ids, np.zeros([len(item_ids), 0], np.float32))  # the table; no float32 copy
        self.vectors = tf.Variable(np.asarray(vectors, np.float16), trainable=False, name="text_vectors")

    def lookup(self, item_ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        rows = self.table.lookup(item_ids)
        hit = rows >= 0
        vectors = tf.cast(tf.gather(self.vectors, tf.maximum(rows, 0)), tf.float32)
        return vectors * tf.cast(hit, tf.float32)[..., tf.newaxis], hit


TEXT_CACHES = dict(zip(TEXT_DTYPES, (TextVectorCache, Float16TextCache), strict=True))


def serving_module(catalog: Catalog, text_dtype: str, transform_dir: str, config: TrainerConfig):
    """The `ServingModule` `export_serving_model` would build for a model over `catalog`, its layers built."""
    transform = tft.TFTransformOutput(transform_dir)
    cache = TEXT_CACHES[text_dtype](catalog.ids, catalog.text)
    sizes = dataclasses.replace(train.vocab_sizes(transform), items=len(catalog.ids))  # N id-embedding rows
    model = TailTowerModel(config, sizes, cache)
    module = export.ServingModule(
        model,
        transform.transform_features_layer(),
        transform.raw_feature_spec(),
        catalog.ids,
        catalog.vectors,
        catalog.is_tail,
        catalog.is_new,
        export.unknown_item_vector(model),  # builds the candidate tower
        export.tail_interaction_share(
            {features.ITEM_LOG_PROB: catalog.served.log_prob, features.ITEM_IS_TAIL: catalog.is_tail}
        ),
        catalog.served,
        config.top_k,
        config.rerank_pool,
        catalog.metadata,
    )
    query, _ = module._query(tf.constant(["u0"]), tf.constant([[item_id(0)]]))  # builds the query tower
    model.ranking_logits(query, query)  # builds the ranking head
    return module


def save(module, output_dir: str) -> None:
    """Saves `module` as `export.export_serving_model` does."""
    export.save_serving_model(module, output_dir)


def table_bytes(module) -> dict[str, int]:
    """Bytes of the module's largest per-item tables (what grows with N)."""
    neighbours = (module.neighbour_rows, module.neighbour_weights)
    return {
        "text cache": module.model.text_cache.vectors.numpy().nbytes,
        "candidate vectors": module.candidate_vectors.numpy().nbytes,
        "item-id embedding": module.model.item_vectors.id_embedding.embedding.embeddings.numpy().nbytes,
        "neighbour table": sum(v.numpy().nbytes for v in neighbours),
    }


def folder_bytes(path: str, under: str = "") -> int:
    top = os.path.join(path, under)
    if os.path.isfile(top):
        return os.path.getsize(top)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(top) for f in files)


# ------------------------------------------------------------------------------------ floor and memory
def matmul_rate(size: int = MATMUL_SIZE, repeats: int = 5) -> float:
    """Multiply-adds per second of a float32 numpy matmul (size × size @ size × size, best of `repeats`)."""
    rng = np.random.default_rng(SEED)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    return size**3 / min(_seconds(lambda: a @ b) for _ in range(repeats))


def gemv_seconds(vectors: np.ndarray, repeats: int = 50) -> float:
    """Seconds of numpy's q·Cᵀ for one query [1, d] against `vectors` [N, d], best of `repeats` (a median
    moved 50× in one busy moment at 20k items)."""
    query = np.ones([1, vectors.shape[1]], np.float32)
    return min(_seconds(lambda: query @ vectors.T) for _ in range(repeats))


def _seconds(call: Callable[[], object]) -> float:
    return timed(call)[1]


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """(call(), its wall seconds)."""
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmRSS:"))
    return int(kb) * 1024


def peak_rss_bytes() -> int:
    """This process's peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ------------------------------------------------------------------------------------ one catalog size
@dataclasses.dataclass
class Measured:
    """What one (N, text cache) model gave: the size/load row's values and its latency results."""

    items: int
    text_dtype: str
    size: dict[str, float] = dataclasses.field(default_factory=dict)
    results: list[tuple[bench.Result, str]] = dataclasses.field(default_factory=list)  # (result, knobs)
    macs_per_s: float = 0.0  # the fp32 matmul rate measured before the latency rows
    floor_s: float = 0.0  # N·d / macs_per_s: one query's compute floor
    gemv_s: float = 0.0  # numpy's q·Cᵀ for one query


def build_and_save(n: int, text_dtype: str, transform_dir: str, version_dir: str, config: TrainerConfig):
    """Builds and saves the model → (table bytes, build and save seconds, the candidate vectors)."""
    start = time.perf_counter()
    catalog = synthetic_catalog(n, config)
    module = serving_module(catalog, text_dtype, transform_dir, config)
    build_s = time.perf_counter() - start
    logger.info("%d items, %s text cache: built in %.1f s", n, text_dtype, build_s)
    sizes = table_bytes(module)
    save_s = _seconds(lambda: save(module, version_dir))
    logger.info("saved in %.1f s to %s", save_s, version_dir)
    return {**sizes, "build_s": build_s, "save_s": save_s}, catalog.vectors


def measure(
    n: int, text_dtype: str, transform_dir: str, base_path: str, requests: int, k: int, grpc: bool
) -> Measured:
    """Builds and saves one model, then loads and load-tests it once the build is freed."""
    config = TrainerConfig()
    version_dir = os.path.join(base_path, "1")
    tables, vectors = build_and_save(n, text_dtype, transform_dir, version_dir, config)
    out = Measured(n, text_dtype, macs_per_s=matmul_rate(), gemv_s=gemv_seconds(vectors))
    out.floor_s = n * config.embedding_dim / out.macs_per_s
    del vectors
    gc.collect()
    rng = np.random.default_rng(SEED)
    queries = bench.request_set(
        requests, [item_id(row) for row in rng.choice(n, min(n, HISTORY_POOL), replace=False)]
    )
    out.size = {
        "disk": folder_bytes(version_dir),
        "variables": folder_bytes(version_dir, "variables"),
        "graph": folder_bytes(version_dir, "saved_model.pb"),
        **tables,
    }
    off = _local_rows(out, version_dir, queries, k)
    gc.collect()  # the in-process model, before the server loads its own
    if grpc:
        _grpc_rows(out, base_path, queries, k, off)
    return out


def _local_rows(out: Measured, version_dir: str, queries: list[bench.Query], k: int) -> dict:
    """Load time, first call and the latency rows of `LocalClient`; returns the knobs-off set."""
    local, out.size["load_s"] = timed(lambda: LocalClient(version_dir))
    off = with_knobs_off({}, knob_names(local.scalar_inputs(features.RECOMMEND_SIGNATURE)))
    out.size["first_s"] = _seconds(lambda: bench.sender(local, k, off)(queries[0]))
    logger.info("loaded in %.1f s, first call %.2f s", out.size["load_s"], out.size["first_s"])
    send = lambda: bench.sender(local, k, off)  # noqa: E731
    bench.run_load("warm-up", 1, queries[: max(1, len(queries) // 10)], send)
    out.results.extend((bench.run_load("in-process", c, queries, send), "off") for c in CONCURRENCY)
    mmr = {**off, features.MMR_LAMBDA: MMR}
    result = bench.run_load("in-process", 1, queries, lambda: bench.sender(local, k, mmr))
    out.results.append((result, f"{features.MMR_LAMBDA} {MMR}"))
    return off


def _grpc_rows(out: Measured, base_path: str, queries: list[bench.Query], k: int, off: Mapping) -> None:
    """Start-to-ready time, RSS and latency rows of the local model server over gRPC (bench.start_server)."""
    log_path = os.path.join(os.path.dirname(base_path), "server.log")
    start = time.perf_counter()
    process, _, grpc_port = bench.start_server(base_path, MODEL_NAME, log_path)
    out.size["server_ready_s"] = time.perf_counter() - start
    logger.info("model server ready in %.1f s", out.size["server_ready_s"])
    client = GrpcClient(f"127.0.0.1:{grpc_port}", MODEL_NAME, timeout_s=bench.TIMEOUT_S)
    try:
        send = lambda: bench.sender(client, k, off)  # noqa: E731
        bench.run_load("warm-up", 1, queries[: max(1, len(queries) // 10)], send)
        out.results.extend((bench.run_load("gRPC", c, queries, send), "off") for c in CONCURRENCY)
        out.size["server_rss"] = rss_bytes(process.pid)  # after the load: what serving holds
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=60)


# ------------------------------------------------------------------------------------ tables
SIZE_HEADERS = [
    "items",
    "text cache",
    "on disk MB",
    "variables MB",
    "graph MB",
    "text cache MB",
    "candidate vectors MB",
    "item-id embedding MB",
    "neighbour table MB",
    "build s",
    "save s",
    "load s",
    "first call s",
    "server ready s",
    "server RSS MB",
]
LATENCY_HEADERS = [
    "items",
    "text cache",
    "target",
    "concurrency",
    "knobs",
    "ok",
    "p50 ms",
    "p99 ms",
    "floor ms",
    "p50 / floor",
    "numpy q·Cᵀ ms",
    "p50 / q·Cᵀ",
    "errors",
]


def size_row(m: Measured) -> list[str]:
    s = m.size
    megabytes = ["disk", "variables", "graph", "text cache", "candidate vectors", "item-id embedding"]
    cells = [f"{s[key] / MB:.1f}" for key in [*megabytes, "neighbour table"]]
    seconds = [f"{s[key]:.2f}" for key in ("build_s", "save_s", "load_s", "first_s")]
    server = (
        [f"{s['server_ready_s']:.1f}", f"{s['server_rss'] / MB:.0f}"] if "server_rss" in s else ["-", "-"]
    )
    return [f"{m.items:,}", m.text_dtype, *cells, *seconds, *server]


def latency_rows(m: Measured) -> list[list[str]]:
    rows = []
    for result, knobs in m.results:
        latencies = np.asarray(result.latencies_s) * 1e3
        p50, p99 = np.percentile(latencies, [50, 99]) if len(latencies) else (np.nan, np.nan)
        floor, gemv = m.floor_s * 1e3 * result.concurrency, m.gemv_s * 1e3 * result.concurrency
        rows.append(
            [f"{m.items:,}", m.text_dtype, result.target, str(result.concurrency), knobs, str(len(latencies))]
            + [
                f"{p50:.2f}",
                f"{p99:.2f}",
                f"{floor:.3f}",
                f"{p50 / floor:.0f}",
                f"{gemv:.3f}",
                f"{p50 / gemv:.1f}",
            ]
            + [str(result.errors)]
        )
    return rows


def report(measured: Sequence[Measured], requests: int, k: int) -> list[str]:
    rates = ", ".join(f"{m.items:,} {m.text_dtype}: {m.macs_per_s / 1e9:.0f}" for m in measured)
    cpus = os.cpu_count()
    return [
        f"The serving SavedModel per catalog size ({cpus} CPUs; MB = 2^20 bytes; load: `LocalClient(dir)`, "
        "i.e. `tf.saved_model.load`; first call: its first `recommend`; server: `python -m serving.server` "
        "from start to /readyz (model loaded and warmed), and its RSS after the gRPC rows)",
        "",
        *bench.markdown([size_row(m) for m in measured], SIZE_HEADERS),
        "",
        f"`recommend` (k={k}, {requests} requests per row, 0-10 history items; knobs off unless named), "
        f"{cpus} CPUs. floor = concurrency × N·d multiply-adds at the fp32 matmul rate measured in the same "
        f"run ({rates} G multiply-add/s per size); numpy q·Cᵀ = concurrency × one query's [1, d] × [d, N] "
        "product in numpy",
        "",
        *bench.markdown([row for m in measured for row in latency_rows(m)], LATENCY_HEADERS),
    ]


# ------------------------------------------------------------------------------------ main
def benchmark(
    items: Sequence[int], text_dtypes: Sequence[str], requests: int, k: int, grpc: bool, workdir: str
):
    transform_dir, seconds = timed(lambda: tiny_transform(workdir))
    logger.info("transform graph analysed in %.1f s", seconds)
    measured = []
    for n in items:
        for text_dtype in text_dtypes:
            base_path = os.path.join(workdir, f"{n}-{text_dtype}", MODEL_NAME)
            measured.append(measure(n, text_dtype, transform_dir, base_path, requests, k, grpc))
            shutil.rmtree(os.path.dirname(base_path))  # 1M items: a few GB per model
    return measured


def _ints(text: str) -> list[int]:
    return [int(value.replace("_", "")) for value in text.split(",") if value]


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=_ints, default=list(ITEMS), help="catalog sizes, comma-separated")
    parser.add_argument("--text_dtypes", default=",".join(TEXT_DTYPES), help=f"of {TEXT_DTYPES}")
    parser.add_argument("--requests", type=int, default=200, help="requests per latency row")
    parser.add_argument("--k", type=int, default=TrainerConfig().top_k)
    parser.add_argument("--grpc", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--workdir", default=None, help="where the models are written (default: a temp dir)")
    parser.add_argument("--output", default="demo-run/bench-scale-serving.md")
    args = parser.parse_args(argv)
    text_dtypes = [d for d in args.text_dtypes.split(",") if d]
    unknown = sorted(set(text_dtypes) - set(TEXT_DTYPES))
    if unknown:
        parser.error(f"--text_dtypes: unknown {unknown}; known: {list(TEXT_DTYPES)}")
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench-scale-serving-")
    os.makedirs(workdir, exist_ok=True)
    measured = benchmark(args.items, text_dtypes, args.requests, args.k, args.grpc, workdir)
    lines = report(measured, args.requests, args.k)
    lines += ["", f"peak RSS of the benchmark process: {peak_rss_bytes() / MB:,.0f} MB"]
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return lines


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main()
    # An in-process tf.Transform analysis (any AnalyzeDataset; TF 2.21, TFT 1.21, Python 3.13) leaves objects
    # whose collection at interpreter exit segfaults; frozen objects are left out of that last collection.
    gc.freeze()
