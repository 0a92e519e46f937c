"""`make loop` on tiny data (slow: a pipeline run): the service logs the simulated days, the retrain reads the
logs (log-derived positives and negatives counted), the new version is hot-swapped in and serves. The loop
starts from a copy of tests/test_pipeline_e2e.py's first run (`--skip-first-run`): one pipeline run fewer."""

import dataclasses
import os
import shutil

import pytest

from pipeline.loop.__main__ import LOOP_REPORT, LoopOptions, run_loop
from pipeline.loop.simulator import SimulatorConfig
from serving.event_log import EVENTS, SERVED, read_records, spans
from tests.test_pipeline_e2e import LENIENT_GATE

pytestmark = pytest.mark.slow

DAYS = 1
USERS_PER_DAY = 25


@pytest.fixture(scope="module")
def loop(tmp_path_factory, first_run):
    output = str(tmp_path_factory.mktemp("loop") / "run")
    shutil.copytree(first_run.output_dir, output)  # its ML Metadata still points at the first run's artifacts
    config = dataclasses.replace(
        first_run,
        output_dir=output,
        enable_cache=False,
        # Mechanics only: the retrain must be pushed even if it scores worse on tiny data.
        eval_gate=dataclasses.replace(LENIENT_GATE, regression_tolerance=1.0),
    )
    simulator = SimulatorConfig(users_per_day=USERS_PER_DAY, seed=1)
    return config, run_loop(LoopOptions(config, DAYS, simulator, first_run=False))


def test_each_day_is_one_closed_span_of_served_lists_and_events(loop):
    config, report = loop
    logs = os.path.join(config.output_dir, "logs")
    assert spans(logs, SERVED) == spans(logs, EVENTS) == [1, 2]
    for day in report.days:
        served = read_records(logs, SERVED, [day.day])
        assert len(served) == day.stats.requests == day.exposure["requests"] == USERS_PER_DAY
        assert {r["model_version"] for r in served} == {day.version}
        assert day.stats.failed_requests == 0 and day.stats.failed_event_batches == 0
        assert day.exposure["impressions"] == day.stats.impressions > 0
        assert day.exposure["clicks"] == day.stats.clicks  # every click is on a displayed slot


def test_the_retrain_read_the_logs_and_its_version_was_swapped_in(loop):
    config, report = loop
    counts = report.log_counts
    assert counts["served_spans"] == [1] and counts["requests"] == USERS_PER_DAY
    first_day = report.days[0].stats
    assert counts["positives"] == first_day.clicks  # a click is the first taking event of its slot
    assert counts["negatives"] == first_day.impressions - first_day.clicks
    assert report.retrained_version is not None and report.retrained_version > report.first_version
    assert report.swap_s is not None
    assert [day.version for day in report.days] == [report.first_version, report.retrained_version]
    table = open(os.path.join(config.output_dir, LOOP_REPORT), encoding="utf-8").read()
    assert table.splitlines()[0].startswith("| day | version | lists | CTR |")
    assert f"| {report.retrained_version} | 1 | {USERS_PER_DAY} |" in table  # the per-version rows
