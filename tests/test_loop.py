"""`make loop` on tiny data (slow: two pipeline runs): the service logs the simulated days, the retrain reads
the logs (log-derived positives and negatives counted), the new version is hot-swapped in and serves."""

import dataclasses
import os

import pytest

from pipeline import configs
from pipeline.demo import synthetic_data
from pipeline.loop.__main__ import LOOP_REPORT, LoopOptions, run_loop
from pipeline.loop.simulator import SimulatorConfig
from serving.event_log import EVENTS, SERVED, read_records, spans
from tests.test_pipeline_e2e import LENIENT_GATE, tiny_bert  # noqa: F401  (tiny_bert: a fixture)
from trainer.config import TrainerConfig

pytestmark = pytest.mark.slow

DAYS = 1
USERS_PER_DAY = 25


@pytest.fixture(scope="module")
def loop(tmp_path_factory, tiny_bert):  # noqa: F811
    root = tmp_path_factory.mktemp("loop")
    synthetic_data.generate(str(root / "data"), num_users=60, num_items=80, seed=2)
    config = configs.PipelineConfig(
        data_dir=str(root / "data"),
        output_dir=str(root / "run"),
        trainer=TrainerConfig(bert=tiny_bert, epochs=2, batch_size=128, embedding_dim=16),
        # Mechanics only: the retrain must be pushed even if two epochs on tiny data score worse.
        eval_gate=dataclasses.replace(LENIENT_GATE, regression_tolerance=1.0),
    )
    simulator = SimulatorConfig(users_per_day=USERS_PER_DAY, seed=1)
    return config, run_loop(LoopOptions(config, DAYS, simulator))


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
