"""serving/ann_bench.py at small catalogs, as `make bench-ann` runs it: one table row per (N, method,
setting), faiss's HNSW reaching the recall it is chosen for on clustered vectors, the larger search setting
never less accurate, and --items checked by argparse."""

import numpy as np
import pytest

pytest.importorskip("faiss")

from serving import ann_bench  # noqa: E402  (after the skip: the module imports faiss)
from trainer.config import TrainerConfig  # noqa: E402

ITEMS = (1_000, 2_000)
QUERIES = 50


def _rows(text: str) -> list[dict[str, str]]:
    """The rows {header: cell} of the one markdown table in `text`."""
    block = [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line[:1] == "|"
    ]
    headers, _, *rows = block
    return [dict(zip(headers, row, strict=True)) for row in rows]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> list[dict[str, str]]:
    output = tmp_path_factory.mktemp("ann") / "bench-ann.md"
    lines = ann_bench.main(
        ["--items", ",".join(map(str, ITEMS)), "--queries", str(QUERIES), "--output", str(output)]
    )
    assert output.read_text() == "\n".join(lines) + "\n"
    return _rows(output.read_text())


def _recalls(table: list[dict[str, str]], n: int, method: str) -> list[float]:
    """Recall@10 of `method`'s rows at `n` items, in its settings' order (smaller first)."""
    return [float(row["Recall@10"]) for row in table if row["items"] == f"{n:,}" and row["method"] == method]


def test_one_row_per_size_method_and_setting(table):
    settings = {ann_bench.EXACT: [ann_bench.EXACT_SETTING]}
    for method, (_, name, values, _) in ann_bench.INDEXES.items():
        settings[method] = [f"{name} {value}" for value in values]
    expected = [(f"{n:,}", method, s) for n in ITEMS for method, names in settings.items() for s in names]
    assert [(row["items"], row["method"], row["setting"]) for row in table] == expected


def test_exact_row_is_the_reference_and_the_matrix_its_index(table):
    dim = TrainerConfig().embedding_dim
    for n in ITEMS:
        (exact,) = [row for row in table if row["items"] == f"{n:,}" and row["method"] == ann_bench.EXACT]
        assert float(exact["Recall@10"]) == 1.0
        assert float(exact["index MB"]) == round(n * dim * 4 / ann_bench.MB, 1)
    for row in table:
        assert 0 < float(row["p50 ms"]) <= float(row["p99 ms"])


def test_hnsw_finds_the_top_10_and_larger_settings_are_at_least_as_accurate(table):
    for n in ITEMS:
        hnsw, ivf = _recalls(table, n, ann_bench.HNSW), _recalls(table, n, ann_bench.IVF)
        assert hnsw[-1] >= 0.9, hnsw
        assert hnsw == sorted(hnsw) and ivf == sorted(ivf), (hnsw, ivf)
        assert 0 < ivf[0] < 1, ivf  # the data is not so easy that every setting is exact


def test_exact_top_k_is_numpys_full_sort():
    items, queries = ann_bench.clustered_vectors(500, 8, 16)
    full = np.argsort(-(queries @ items.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ann_bench.reference_top_k(items, queries, 10), full)
    assert ann_bench.recall(full[:, ::-1], full) == 1.0 and ann_bench.recall(full + 1_000, full) == 0.0


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ("10k", "expected comma-separated integers"),
        (str(ann_bench.MIN_ITEMS - 1), f"at least {ann_bench.MIN_ITEMS:,}"),
        (",", "no catalog size"),
    ],
)
def test_invalid_items_is_an_argparse_error(items, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        ann_bench.main(["--items", items, "--output", str(tmp_path / "never.md")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "argument --items" in error and message in error, error
    assert not (tmp_path / "never.md").exists()
