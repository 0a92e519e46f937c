"""`make bench-scale` (evaluation/scale_bench.py): the parts that do not need a pipeline run at scale."""

import argparse
import dataclasses
import json
import os

import pytest

from evaluation import scale_bench
from evaluation.scale_bench import ComponentCost, ScalePoint
from pipeline import configs


def test_rss_samples_are_attributed_to_the_component_running_then():
    intervals = {"Trainer": (10.0, 20.0, True), "Transform": (2.0, 9.0, True)}
    samples = [(1.0, 900), (3.0, 100), (8.0, 300), (12.0, 500), (19.5, 700), (25.0, 999)]
    costs = scale_bench.attribute(intervals, samples, stopped_at=30.0)
    assert list(costs) == ["Transform", "Trainer"]  # in start order
    assert costs["Transform"] == ComponentCost(7.0, 300)
    assert costs["Trainer"] == ComponentCost(10.0, 700)  # samples outside every component count for none


def test_a_component_stopped_by_the_time_limit_ran_until_the_stop():
    # ML Metadata's last update of a still-running execution is about its start.
    costs = scale_bench.attribute({"Trainer": (10.0, 10.1, False)}, [(25.0, 800), (31.0, 999)], 30.0)
    assert costs["Trainer"] == ComponentCost(20.0, 800, killed=True)
    points = [_point(1, 1000, Trainer=10), _point(10, 10000, Trainer=50)]
    points[1].components["Trainer"].killed = True
    assert scale_bench.growth_exponents(points, "Trainer") == [None]  # a lower bound is no slope
    assert "50 s / 50.00 GiB (stopped)" in scale_bench.table(points)


def _point(scale: float, interactions: int, **seconds: float) -> ScalePoint:
    components = {name: ComponentCost(s, int(s * 2**30)) for name, s in seconds.items()}
    return ScalePoint(scale, 1, 1, interactions, sum(seconds.values()), 2**31, components)


def test_growth_exponent_is_the_log_log_slope_in_interactions():
    points = [_point(1, 1000, Trainer=10, Transform=5), _point(10, 10000, Trainer=100, Transform=50 * 10)]
    assert scale_bench.growth_exponents(points, "Trainer") == [pytest.approx(1.0)]
    assert scale_bench.growth_exponents(points, "Transform") == [pytest.approx(2.0)]
    assert scale_bench.growth_exponents(points, "Pusher") == [None]


def test_table_names_each_scale_the_dominant_step_and_why_a_scale_stopped():
    points = [_point(1, 1000, Trainer=10, Transform=5), _point(10, 10000, Trainer=100, Transform=500)]
    points.append(ScalePoint(100, 1, 1, 100000, 60.0, 0, {}, "passed the 1-min limit"))
    report = scale_bench.table(points)
    header, rule, *rows = report.splitlines()
    assert header.count("|") - 1 == len(rule.split("|")) - 2 == 1 + 3 + 2
    assert all(row.count("|") == header.count("|") for row in rows[:4])
    assert "| Trainer | 10 s / 10.00 GiB | 100 s / 100.00 GiB | – | 1.00 | – |" in report
    assert "| dominant step | Trainer (67%) | Transform (83%) | – |" in report
    assert "- 100×: passed the 1-min limit" in report


def test_scales_must_be_positive_numbers():
    assert scale_bench.parse_scales("10,1,1") == (1.0, 10.0)
    for bad in ("", "1,x", "0,1", "-1", "nan", "inf"):
        with pytest.raises(argparse.ArgumentTypeError, match="--scales"):
            scale_bench.parse_scales(bad)


def test_points_read_back_as_main_writes_them(tmp_path):
    points = [_point(1, 1000, Trainer=10, Transform=5), _point(10, 10000, Trainer=100, Transform=500)]
    points[1].components["Trainer"].killed, points[1].stopped = True, "passed the 1-min limit"
    path = tmp_path / "bench-scale.json"
    path.write_text(json.dumps([dataclasses.asdict(p) for p in points]))
    assert scale_bench.read_points(str(path)) == points


def test_plot_is_written(tmp_path):
    points = [_point(1, 1000, Trainer=10, Transform=5), _point(10, 10000, Trainer=100, Transform=500)]
    scale_bench.plot(points, str(tmp_path / "bench.png"))
    assert (tmp_path / "bench.png").stat().st_size > 0


@pytest.mark.slow
def test_component_intervals_come_from_the_runs_ml_metadata(first_run):
    metadata = configs.run_paths(first_run.output_dir)["metadata_path"]
    intervals = scale_bench.component_intervals(metadata)
    assert {"Trainer", "Transform", "Evaluator"} <= set(intervals)
    assert all(0 < start <= end and finished for start, end, finished in intervals.values())
    # Transform feeds the Trainer (in a cached rerun, as the test_pipeline_e2e runs are, too)
    assert intervals["Transform"][0] <= intervals["Trainer"][0]
    assert os.path.getsize(metadata) > 0
