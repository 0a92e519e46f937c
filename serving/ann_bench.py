"""Approximate nearest-neighbour retrieval against brute force over N candidate vectors: faiss's HNSW and IVF
indexes beside numpy's exact q·Cᵀ, their Recall@10 and single-query latency (issue 16 §2, past brute force).

  make bench-ann [ITEMS=10000,100000,1000000]                 # → demo-run/bench-ann.md
  python -m serving.ann_bench --items 2000 --queries 50 --output /tmp/ann.md

The pattern it measures is the two-stage one: the `item_embeddings` signature exports the catalog's candidate
vectors, an ANN index outside the model server returns a candidate pool for the user's query vector, and
`recommend` scores that pool (its allowed_ids filter). ScaNN's ops are not in stock TF Serving, so the index
lives outside the SavedModel; faiss-cpu (Meta's, abi3 wheels, `pip install -e '.[ann]'`) is the library.

What is real: faiss's indexes and their parameters (IndexHNSWFlat, M = `HNSW_M`, efSearch `EF_SEARCH`;
IndexIVFFlat, nlist = `IVF_LISTS_PER_ROOT`·√N, nprobe `NPROBE`; both inner product, the served score's
metric), their build time, serialized size (`faiss.serialize_index`), and latency measured one query at a
time. What is synthetic: the vectors. d = `TrainerConfig.embedding_dim` and every vector has unit length, as
the towers' outputs (cosine scores); items are a seeded mixture of `CENTRES` Gaussian clusters of unequal
sizes around random unit centres, since trained embeddings cluster (by category, brand, taste) and uniform
random vectors are every ANN's worst case; each query is a catalog item moved by Gaussian noise and
renormalised, a user vector near the items they like. Recall of an index here says how well it finds the
inner-product top-k on data shaped like this, not on a trained model's vectors; rerun it on those
(`item_embeddings` of every catalog id) before choosing parameters.

Recall@k is the share of the exact top-k (numpy over all N, in float32) that the index returns, averaged over
the queries; the exact row is the reference (1.0 by construction). Latency: one query per call (batch 1),
each timed alone after `WARMUP` untimed calls, p50 and p99 over the queries; faiss searches on one OpenMP
thread (`faiss.omp_set_num_threads(1)`) and numpy's q·Cᵀ on one BLAS thread (threadpoolctl), so a row is one
request on one core. Builds use faiss's default threads (all cores). No model and no server: TensorFlow is not
even imported (the table is tabulate's github format, as serving/bench.py writes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Sequence

import faiss
import numpy as np
from tabulate import tabulate
from threadpoolctl import threadpool_limits

from trainer.config import TrainerConfig

logger = logging.getLogger(__name__)

ITEMS = (10_000, 100_000, 1_000_000)
MIN_ITEMS = 1_000  # below this a brute-force scan costs microseconds: no index is worth building
QUERIES = 1_000  # per N; each is timed alone
WARMUP = 10  # untimed searches before each latency row
SEED = 0
CENTRES = 300  # Gaussian clusters of the synthetic catalog
# An item's distance from its cluster's unit centre (noise norm, before renormalising): cosine ≈ 0.7 to it,
# clusters that overlap. Measured at 20k items: at 0.5 every index setting here has Recall@10 ≈ 1.0; at 1.5
# a query's 10th-best cosine (0.44) is what uniform random vectors give, the mixture no longer shows.
ITEM_SPREAD = 1.0
QUERY_SPREAD = 0.5  # a query's distance from the item it perturbs
EXACT_BATCH = 64  # queries per numpy product when computing the reference top-k (1M items: 256 MB of scores)
HNSW_M = 32  # neighbours per node of the HNSW graph (faiss's efConstruction default, 40, is kept)
EF_SEARCH = (32, 128)
IVF_LISTS_PER_ROOT = 4  # nlist = 4·√N, the usual rule of thumb (faiss wiki: 4·√N to 16·√N)
NPROBE = (8, 32)
MB = 2**20

EXACT, HNSW, IVF = "exact (numpy)", "faiss HNSWFlat", "faiss IVFFlat"
EXACT_SETTING = "q·Cᵀ + argpartition"
HEADERS = ["items", "method", "setting", "build s", "index MB", "Recall@{k}", "p50 ms", "p99 ms"]
SPEED_UP = "p50 vs exact"


@dataclasses.dataclass(frozen=True)
class Row:
    """One (N, method, setting) of the table."""

    items: int
    method: str
    setting: str
    build_s: float
    index_bytes: int
    recall: float
    latencies_s: np.ndarray  # [queries]

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1e3)


# ------------------------------------------------------------------------------------ synthetic vectors
def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _noise(rng: np.random.Generator, rows: int, dim: int, spread: float) -> np.ndarray:
    """[rows, dim] Gaussian noise of norm ≈ spread."""
    return rng.standard_normal((rows, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))


def clustered_vectors(n: int, queries: int, dim: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(items [n, dim], queries [queries, dim]) float32 unit vectors: items from a mixture of `CENTRES`
    clusters (Dirichlet sizes), queries = random items moved by `QUERY_SPREAD` noise."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((CENTRES, dim), dtype=np.float32))
    cluster = rng.choice(CENTRES, n, p=rng.dirichlet(np.ones(CENTRES)))
    items = _unit(centres[cluster] + _noise(rng, n, dim, ITEM_SPREAD))
    sources = rng.choice(n, queries, replace=queries > n)
    return items, _unit(items[sources] + _noise(rng, queries, dim, QUERY_SPREAD))


# ------------------------------------------------------------------------------------ searches
def exact_top_k(items: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """The k rows of `items` with the largest q·c, best first, for each row of `query` [B, d] → [B, k]."""
    scores = query @ items.T
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def reference_top_k(items: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """`exact_top_k` of every query, `EXACT_BATCH` queries per product (bounded memory at 1M items)."""
    batches = range(0, len(queries), EXACT_BATCH)
    return np.concatenate([exact_top_k(items, queries[i : i + EXACT_BATCH], k) for i in batches])


def timed_searches(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ids [Q, k], seconds [Q]) of `search` called on one query [1, d] at a time, after `WARMUP` calls."""
    for query in queries[:WARMUP]:
        search(query[np.newaxis])
    ids, seconds = [], []
    for query in queries:
        start = time.perf_counter()
        ids.append(search(query[np.newaxis])[0])
        seconds.append(time.perf_counter() - start)
    return np.stack(ids), np.asarray(seconds)


def recall(found: np.ndarray, reference: np.ndarray) -> float:
    """Mean share of each reference row [Q, k] that the same row of `found` holds (-1: faiss's no result)."""
    hits = [len(np.intersect1d(f, r)) for f, r in zip(found, reference, strict=True)]
    return float(np.mean(hits) / reference.shape[1])


# ------------------------------------------------------------------------------------ indexes
def build_hnsw(items: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWFlat(items.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.add(items)
    return index


def ivf_lists(n: int) -> int:
    return max(1, round(IVF_LISTS_PER_ROOT * np.sqrt(n)))


def build_ivf(items: np.ndarray) -> faiss.Index:
    dim = items.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_lists(len(items)), faiss.METRIC_INNER_PRODUCT)
    index.train(items)  # k-means on (a sample of at most 256 per list of) the items
    index.add(items)
    return index


def _set_ef_search(index: faiss.Index, value: int) -> None:
    index.hnsw.efSearch = value


def _set_nprobe(index: faiss.Index, value: int) -> None:
    index.nprobe = value


# method → (builder, setting's name, its values, how to apply one)
INDEXES: dict[str, tuple[Callable[[np.ndarray], faiss.Index], str, Sequence[int], Callable]] = {
    HNSW: (build_hnsw, "efSearch", EF_SEARCH, _set_ef_search),
    IVF: (build_ivf, "nprobe", NPROBE, _set_nprobe),
}


def index_rows(method: str, items: np.ndarray, queries: np.ndarray, reference: np.ndarray) -> list[Row]:
    """Builds `method`'s index over `items` (all threads), then one row per setting (one thread)."""
    build, name, values, apply = INDEXES[method]
    start = time.perf_counter()
    index = build(items)
    build_s = time.perf_counter() - start
    size = len(faiss.serialize_index(index))
    logger.info("%s over %d items built in %.1f s (%.0f MB)", method, len(items), build_s, size / MB)
    k, rows, threads = reference.shape[1], [], faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for value in values:
            apply(index, value)
            found, seconds = timed_searches(lambda q: index.search(q, k)[1], queries)
            row = Row(len(items), method, f"{name} {value}", build_s, size, recall(found, reference), seconds)
            rows.append(row)
            logger.info("  %s: Recall@%d %.3f", row.setting, k, row.recall)
    finally:
        faiss.omp_set_num_threads(threads)
    return rows


def exact_row(items: np.ndarray, queries: np.ndarray, reference: np.ndarray) -> Row:
    """numpy's brute force, one query per call on one BLAS thread (OpenBLAS may spread one large product
    over every core, which concurrent requests would not get)."""
    k = reference.shape[1]
    with threadpool_limits(limits=1, user_api="blas"):
        found, seconds = timed_searches(lambda q: exact_top_k(items, q, k), queries)
    return Row(len(items), EXACT, EXACT_SETTING, 0.0, items.nbytes, recall(found, reference), seconds)


def measure(n: int, queries: int, k: int, dim: int, seed: int = SEED) -> list[Row]:
    """Every row of one catalog size."""
    items, query_vectors = clustered_vectors(n, queries, dim, seed)
    reference = reference_top_k(items, query_vectors, k)
    rows = [exact_row(items, query_vectors, reference)]
    logger.info("%d items: exact p50 %.2f ms", n, rows[0].percentile_ms(50))
    for method in INDEXES:
        rows += index_rows(method, items, query_vectors, reference)
    return rows


def benchmark(items: Sequence[int], queries: int, k: int, seed: int = SEED) -> list[Row]:
    dim = TrainerConfig().embedding_dim
    return [row for n in items for row in measure(n, queries, k, dim, seed)]


# ------------------------------------------------------------------------------------ report
def table_row(row: Row, exact_p50_ms: float) -> list[str]:
    p50 = row.percentile_ms(50)
    return [
        f"{row.items:,}",
        row.method,
        row.setting,
        f"{row.build_s:.2f}",
        f"{row.index_bytes / MB:.1f}",
        f"{row.recall:.3f}",
        f"{p50:.3f}",
        f"{row.percentile_ms(99):.3f}",
        f"{exact_p50_ms / p50:.1f}×",
    ]


def report(rows: Sequence[Row], queries: int, k: int) -> list[str]:
    exact_p50 = {row.items: row.percentile_ms(50) for row in rows if row.method == EXACT}
    headers = [*(header.format(k=k) for header in HEADERS), SPEED_UP]
    cells = [table_row(row, exact_p50[row.items]) for row in rows]
    return [
        f"Top-{k} retrieval over N synthetic unit vectors (d = {TrainerConfig().embedding_dim}, {CENTRES} "
        f"clusters; {queries} queries per N, each a perturbed item), {os.cpu_count()} CPUs. Recall@{k}: "
        f"share of numpy's exact top-{k} returned. Latency: one query per call (batch 1), faiss on one "
        "OpenMP thread (`faiss.omp_set_num_threads(1)`), numpy on one BLAS thread. Build: faiss's default "
        f"threads; index MB: `faiss.serialize_index` (exact: the [N, d] float32 matrix). HNSW M = {HNSW_M}; "
        f"IVF nlist = {IVF_LISTS_PER_ROOT}·√N ({', '.join(f'{n:,}: {ivf_lists(n)}' for n in exact_p50)}).",
        "",
        *tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True).splitlines(),
    ]


# ------------------------------------------------------------------------------------ main
def catalog_sizes(text: str) -> list[int]:
    """--items: comma-separated catalog sizes, each an integer ≥ `MIN_ITEMS` ("1_000_000" allowed)."""
    try:
        sizes = [int(value.replace("_", "")) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected comma-separated integers, e.g. 10000,1_000_000"
        ) from None
    if not sizes:
        raise argparse.ArgumentTypeError("no catalog size given, e.g. 10000,100000")
    if min(sizes) < MIN_ITEMS:
        raise argparse.ArgumentTypeError(f"{text!r}: every catalog size must be at least {MIN_ITEMS:,}")
    return sizes


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--items", type=catalog_sizes, default=list(ITEMS), help="catalog sizes, e.g. 10000,20000"
    )
    parser.add_argument("--queries", type=int, default=QUERIES, help="queries per catalog size")
    parser.add_argument("--k", type=int, default=TrainerConfig().top_k, help="top-k of the recall")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--output", default="demo-run/bench-ann.md")
    args = parser.parse_args(argv)
    if args.queries < 1 or args.k < 1:
        parser.error("--queries and --k must be positive")
    lines = report(benchmark(args.items, args.queries, args.k, args.seed), args.queries, args.k)
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        f.write(text)
    return lines


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    main()
