"""`make loop`: the production loop on one machine — pipeline → service → simulated days → retrain on the
dataset + the service's logs → hot swap → more simulated days — and what it changed.

    scripts/env python -m pipeline.loop [--data DIR] [--output demo-run] [--days 3] [--users-per-day 200]
        [--bert NAME_OR_DIR] [--trainer-config JSON] [--seed 0]

Everything lives under --output, as for `make demo`: data/ (the synthetic dataset unless --data), the
pipeline root, serving/tailtower/<version>/, service/ and logs/ (one span per simulated day). The service runs
in this process with the model server in-process (`--model_endpoint in-process`, loopback, a free port), so
a newly pushed version is picked up by the model server's version policy without a restart, as TF Serving
would. Before day 1 the shop's existing purchase history (the dataset's interactions) is imported into the
service's history store, as a shop going live would. Shoppers are pipeline/loop/simulator.py's.

Per simulated day: the model version that served, lists served, CTR overall / head / tail / new items
(clicks per impression), live APLT, catalog and tail coverage of what was shown, new items shown for the
first time — computed from that day's closed log span by evaluation/exposure.py, the definitions of the live
metrics and the report. Then one row per model version. Written to <output>/loop.md as well.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO/WARNING lines drown the progress

import argparse
import dataclasses
import json
import time
from collections import defaultdict
from dataclasses import dataclass

from components.data_files import Interaction, find_dataset_files, parse_interaction, read_raw_rows
from pipeline import configs, local_runner
from pipeline.demo.__main__ import data_dir_of, prepare_data, stage
from pipeline.loop.simulator import DayStats, ShopSimulator, SimulatorConfig
from serving.config import DEFAULT_OUTPUT
from serving.log_fields import EVENTS, MANUAL_SPANS, MODEL_VERSION, SERVED
from trainer import features

LOOP_REPORT = "loop.md"
SWAP_TIMEOUT_S = 300.0  # for the in-process model server to load and serve a newly pushed version
COLUMNS = (
    "day",
    "version",
    "lists",
    "CTR",
    "CTR head",
    "CTR tail",
    "CTR new",
    "APLT",
    "coverage",
    "tail coverage",
    "new items first shown",
)


@dataclass(frozen=True)
class LoopOptions:
    config: configs.PipelineConfig  # the first run's; the retrain adds logs_dir
    days: int = 3  # simulated days before and after the retrain
    simulator: SimulatorConfig = dataclasses.field(default_factory=SimulatorConfig)
    # False: serve the model already pushed in the output folder (a `make demo` run) instead of a first run.
    first_run: bool = True


@dataclass
class DayRow:
    day: int
    version: int
    stats: DayStats
    exposure: dict

    def cells(self) -> list[str]:
        e = self.exposure
        rates = [
            e["ctr"],
            e["ctr_head"],
            e["ctr_tail"],
            e["ctr_new"],
            e["aplt"],
            e["coverage"],
            e["tail_coverage"],
        ]
        return [
            str(self.day),
            str(self.version),
            str(e["requests"]),
            *map(_fmt, rates),
            str(e["first_shown"]),
        ]


@dataclass
class LoopReport:
    days: list[DayRow]
    first_version: int
    retrained_version: int | None  # None: the retrain was not blessed (the first version kept serving)
    log_counts: dict  # what the retrain's ExampleGen took from the logs (summary.json "logs")
    swap_s: float | None  # from the push to the first list served by the new version

    def table(self) -> list[str]:
        lines = [_row(COLUMNS), _row(["---"] * len(COLUMNS))]
        lines += [_row(day.cells()) for day in self.days]
        lines += ["", _row(("version", "days", "lists", "CTR", "CTR tail", "APLT", "tail coverage"))]
        lines.append(_row(["---"] * 7))
        for version, rows in _by_version(self.days).items():
            mean = {
                k: _mean([r.exposure[k] for r in rows]) for k in ("ctr", "ctr_tail", "aplt", "tail_coverage")
            }
            lists = sum(r.exposure["requests"] for r in rows)
            cells = [str(version), str(len(rows)), str(lists), *map(_fmt, mean.values())]
            lines.append(_row(cells))
        return lines


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def _by_version(days: list[DayRow]) -> dict[int, list[DayRow]]:
    grouped: dict[int, list[DayRow]] = defaultdict(list)
    for day in days:
        grouped[day.version].append(day)
    return dict(grouped)


# ------------------------------------------------------------------------------------ steps
def dataset_histories(data_dir: str, length: int) -> dict[str, list[str]]:
    """user id → their last `length` positive items in the dataset, oldest first (bad rows skipped)."""
    rows: dict[str, list[Interaction]] = defaultdict(list)
    for row in read_raw_rows(find_dataset_files(data_dir).interactions):
        parsed = parse_interaction(row)
        if isinstance(parsed, Interaction):
            rows[parsed.user_id].append(parsed)
    return {
        user: [p.item_id for p in sorted(items, key=lambda p: (p.time, p.line))][-length:]
        for user, items in rows.items()
    }


def import_histories(service, data_dir: str) -> int:
    """The shop's existing history into the service's store, keyed by pseudonym as the service keys it."""
    histories = dataset_histories(data_dir, service.config.history_length)
    for user, items in histories.items():
        service.history.append(service.pseudonyms(user), items)
    return len(histories)


def start_service(output_dir: str):
    from serving.service import RecommendationService  # TensorFlow: after the flags are checked
    from serving.service_config import IN_PROCESS, ServiceConfig

    config = ServiceConfig(port=0, output=output_dir, model_endpoint=IN_PROCESS, log_spans=MANUAL_SPANS)
    service = RecommendationService(config).start()
    deadline = time.monotonic() + SWAP_TIMEOUT_S
    while service.model is None:
        if time.monotonic() > deadline:
            service.stop()
            raise RuntimeError(f"the service found no servable model under {config.versions_path}")
        time.sleep(0.2)
    return service


def day_exposure(service, span: int, first_shown: set[str]) -> tuple[int, dict]:
    """The model version that served most of the day, and the day's exposure summary."""
    from evaluation.exposure import Catalog, arrivals, summarize
    from serving.event_log import read_records

    logs = service.config.logs_dir
    served, events = read_records(logs, SERVED, [span]), read_records(logs, EVENTS, [span])
    versions = [int(r[MODEL_VERSION]) for r in served] or [service.model.version]
    version = max(set(versions), key=versions.count)
    items = service.catalog.items(version)
    everything = read_records(logs, SERVED)
    new = {
        v: [i for i, info in service.catalog.items(v).items() if info.is_new] for v in {*versions, version}
    }
    catalog = Catalog.from_items(
        {item: (info.is_tail, info.is_new) for item, info in items.items()}, arrivals(everything, new)
    )
    summary = summarize(served, events, catalog)
    shown_today = {item for record in served for item in record[features.ITEM_IDS] if item}
    new_today = {item for item in shown_today if items.get(item) is not None and items[item].is_new}
    summary["first_shown"] = len(new_today - first_shown)
    first_shown |= new_today
    return version, summary


def simulate_days(service, simulator: ShopSimulator, days: range, first_shown: set[str]) -> list[DayRow]:
    rows = []
    for day in days:
        stats = simulator.run_day(day)
        span = service.log.rotate() - 1  # the day's span, now closed
        version, exposure = day_exposure(service, span, first_shown)
        row = DayRow(day, version, stats, exposure)
        print(_row(row.cells()), f"  ({stats.summary()})", flush=True)
        rows.append(row)
    return rows


def log_counts(output_dir: str) -> dict:
    """summary.json's "logs" section of the latest ExampleGen run."""
    from pipeline.runs import results as run_results

    return run_results.RunResults(output_dir).example_gen_summary()["logs"] or {}


def wait_for_version(service, version: int) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < SWAP_TIMEOUT_S:
        if service.model is not None and service.model.version >= version:
            return time.monotonic() - start
        time.sleep(0.2)
    return None


def pushed_versions(output_dir: str) -> list[int]:
    folder = configs.run_paths(output_dir)["serving_model_dir"]
    return sorted(int(name) for name in os.listdir(folder) if name.isdigit()) if os.path.isdir(folder) else []


def run_loop(options: LoopOptions) -> LoopReport:
    from pipeline.runs import results as run_results

    config = options.config
    output_dir = config.output_dir
    if options.first_run:
        stage(f"pipeline, first run, into {output_dir}")
        local_runner.run(config)
    before = pushed_versions(output_dir)
    if not before:
        raise RuntimeError(f"no model pushed in {output_dir} (the first run's not blessed): nothing to serve")
    service = start_service(output_dir)
    try:
        imported = import_histories(service, config.data_dir)
        url = f"http://127.0.0.1:{service.port}"
        print(f"service on {url}, version {service.model.version}; {imported} users' histories imported")
        first_shown: set[str] = set()
        stage(f"{options.days} simulated days")
        print(_row(COLUMNS))
        with ShopSimulator(config.data_dir, url, options.simulator) as simulator:
            days = simulate_days(service, simulator, range(1, options.days + 1), first_shown)
            stage("retraining on the dataset + the service's logs")
            logs_dir = service.config.logs_dir
            local_runner.run(dataclasses.replace(config, logs_dir=logs_dir))
            counts = log_counts(output_dir)
            print(f"from the logs: {json.dumps(counts)}")
            after = pushed_versions(output_dir)
            retrained = after[-1] if after[-1] not in before else None
            swap_s = None
            if retrained is None:
                print(f"the retrained model was not blessed: version {before[-1]} keeps serving. Why:")
                print("  " + "\n  ".join(run_results.RunResults(output_dir).validation_failures()))
                print(run_results.RunResults(output_dir).evaluation_table())
            else:
                swap_s = wait_for_version(service, retrained)
                print(f"version {retrained} pushed; served {_fmt(swap_s)} s later, no restart")
            stage(f"{options.days} more simulated days")
            print(_row(COLUMNS))
            more = range(options.days + 1, 2 * options.days + 1)
            days += simulate_days(service, simulator, more, first_shown)
    finally:
        service.stop()
    report = LoopReport(days, before[-1], retrained, counts, swap_s)
    text = "\n".join(report.table()) + "\n"
    with open(os.path.join(output_dir, LOOP_REPORT), "w", encoding="utf-8") as f:
        f.write(text)
    stage(f"per day and per model version (also in {os.path.join(output_dir, LOOP_REPORT)})")
    print(text)
    return report


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, LoopOptions]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.loop",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", default=None, help="dataset folder (default: synthetic data)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--days", type=int, default=LoopOptions.days, help="simulated days before and after")
    parser.add_argument("--users-per-day", type=int, default=SimulatorConfig.users_per_day)
    parser.add_argument("--seed", type=int, default=SimulatorConfig.seed)
    parser.add_argument(
        "--skip-first-run",
        action="store_true",
        help="serve the model already pushed in OUTPUT (by make demo) instead of running the pipeline first",
    )
    local_runner.add_trainer_flags(parser)
    args = parser.parse_args(argv)
    try:
        if args.days < 1:
            raise ValueError(f"--days must be >= 1, got {args.days}")
        config = configs.PipelineConfig(
            data_dir=data_dir_of(args),
            output_dir=os.path.abspath(args.output),
            trainer=configs.trainer_config(args.trainer_config, args.bert),
        )
        simulator = SimulatorConfig(users_per_day=args.users_per_day, seed=args.seed)
    except ValueError as e:
        parser.error(str(e))
    return args, LoopOptions(config, args.days, simulator, first_run=not args.skip_first_run)


def main(argv: list[str] | None = None) -> None:
    from pipeline.runs import progress

    args, options = parse_args(argv)
    progress.show_progress()
    prepare_data(args, options.config.data_dir)
    run_loop(options)


if __name__ == "__main__":
    main()
