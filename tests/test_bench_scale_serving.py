"""serving/bench_scale.py end to end at 2,000 items with the float16 text cache (the float32 one is the
Trainer's own, which tests/test_export.py covers), as `make bench-scale-serving` runs it: in its own process,
since the in-process tf.Transform analysis must not share the test process's exit. Checks both tables' rows,
the text cache's bytes and the floor below every measured latency."""

import pathlib
import subprocess
import sys

from serving import bench_scale
from trainer import features

ROOT = pathlib.Path(__file__).resolve().parents[1]
ITEMS = 2_000
REQUESTS = 20
TEXT_DTYPE = "float16"


def _tables(text: str) -> list[list[dict[str, str]]]:
    """The markdown tables of `text`, each as its rows {header: cell}."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip() for cell in line.strip("|").split("|")])
        elif block:
            headers, _, *rows = block
            tables.append([dict(zip(headers, row, strict=True)) for row in rows])
            block = []
    return tables


def test_bench_scale_serving_writes_the_size_and_latency_rows_with_the_floor_below_every_latency(tmp_path):
    output = tmp_path / "bench-scale-serving.md"
    command = [
        sys.executable,
        "-m",
        "serving.bench_scale",
        "--items",
        str(ITEMS),
        "--text_dtypes",
        TEXT_DTYPE,
    ]
    command += ["--requests", str(REQUESTS), "--no-grpc", "--workdir", str(tmp_path), "--output", str(output)]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert output.read_text() in proc.stdout
    (size,), latencies = _tables(output.read_text())

    assert (size["items"], size["text cache"]) == (f"{ITEMS:,}", TEXT_DTYPE)
    assert float(size["text cache MB"]) == round(ITEMS * bench_scale.TEXT_DIM * 2 / bench_scale.MB, 1)
    assert float(size["text cache MB"]) < float(size["variables MB"]) < float(size["on disk MB"])
    assert float(size["load s"]) > 0 and size["server ready s"] == "-"  # --no-grpc

    mmr = f"{features.MMR_LAMBDA} {bench_scale.MMR}"
    expected = [("in-process", "1", "off"), ("in-process", "8", "off"), ("in-process", "1", mmr)]
    assert [(row["target"], row["concurrency"], row["knobs"]) for row in latencies] == expected
    for row in latencies:
        assert (row["items"], row["text cache"], row["ok"], row["errors"]) == (
            f"{ITEMS:,}",
            TEXT_DTYPE,
            str(REQUESTS),
            "0",
        )
        p50 = float(row["p50 ms"])
        assert 0 < float(row["floor ms"]) < p50 and 0 < float(row["numpy q·Cᵀ ms"]) < p50, row
        assert float(row["p99 ms"]) >= p50
