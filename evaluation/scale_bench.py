"""`make bench-scale [SCALES=1,10] [OUT=bench-scale]`: the TFX pipeline's cost against data size.

At each scale s the synthetic shop (pipeline/demo/synthetic_data.py) is generated at s × amazon-office's shape
(`OFFICE_USERS` users, `OFFICE_ITEMS` items, `OFFICE_INTERACTIONS_PER_USER` interactions each) and the whole
pipeline runs on it with the CPU defaults, as `make demo` runs it (`python -m pipeline.local_runner`, a child
process). Measured:
  * each component's wall time: its execution's start and last update in the run's ML Metadata;
  * peak memory: the child's process tree RSS (psutil), sampled every `SAMPLE_S`, each sample attributed to
    the component running then; the whole run's wall time and peak.
Writes OUT/bench-scale.md (table: seconds and peak GiB per component and scale, the dominant step, and the
growth exponent between consecutive scales — 1 is linear in interactions), OUT/bench-scale.json and
OUT/bench-scale.png (log–log: seconds per component against interactions). A scale that fails or passes
--limit-min stops the bench there, and the table says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import psutil

# amazon-office (../shared/data/README.md): 4,905 users, 2,420 items, 53,258 interactions.
OFFICE_USERS = 4905
OFFICE_ITEMS = 2420
OFFICE_INTERACTIONS_PER_USER = 53258 / 4905
DEFAULT_SCALES = (1.0, 10.0)
SAMPLE_S = 0.5
PROGRESS_S = 60.0
DEFAULT_LIMIT_MIN = 120.0  # per scale; the 100× point is expected to pass it on 2 cores
GIB = 1024**3


@dataclasses.dataclass
class ComponentCost:
    seconds: float
    peak_rss: int = 0  # bytes
    killed: bool = False  # still running when the scale's time limit stopped the run


@dataclasses.dataclass
class ScalePoint:
    scale: float
    users: int
    items: int
    interactions: int
    seconds: float = 0.0
    peak_rss: int = 0
    components: dict[str, ComponentCost] = dataclasses.field(default_factory=dict)
    stopped: str = ""  # why this scale did not finish ("" = it did)


class RssSampler(threading.Thread):
    """(time, RSS of a process and its children) every `interval` seconds until `stop()`."""

    def __init__(self, pid: int, interval: float = SAMPLE_S):
        super().__init__(daemon=True)
        self.process, self.interval = psutil.Process(pid), interval
        self.samples: list[tuple[float, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = sum(_rss(p) for p in self.tree())
            if rss:
                self.samples.append((time.time(), rss))
            self._done.wait(self.interval)

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.Error:  # the process has exited
            return []

    def stop(self) -> None:
        self._done.set()
        self.join()


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:  # exited between listing and reading it
        return 0


def component_intervals(metadata_path: str) -> dict[str, tuple[float, float, bool]]:
    """Component id → (start, end, finished) in unix seconds of its newest execution, from the run's ML
    Metadata (end: its last update, which for an execution still running is about its start)."""
    import ml_metadata as mlmd
    from tfx import v1 as tfx

    store = mlmd.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    intervals = {}
    for context in store.get_contexts_by_type("node"):
        executions = store.get_executions_by_context(context.id)
        if executions:
            newest = max(executions, key=lambda e: e.id)
            start, end = newest.create_time_since_epoch / 1000, newest.last_update_time_since_epoch / 1000
            finished = newest.last_known_state not in (mlmd.proto.Execution.NEW, mlmd.proto.Execution.RUNNING)
            intervals[context.name.split(".", 1)[-1]] = (start, end, finished)
    return intervals


def attribute(
    intervals: dict[str, tuple[float, float, bool]], samples: Sequence[tuple[float, int]], stopped_at: float
) -> dict[str, ComponentCost]:
    """Each component's wall time and the peak of the RSS samples taken while it ran, in start order; one
    that had not finished ran until `stopped_at` (the run's end)."""
    costs = {}
    for name, (start, end, finished) in sorted(intervals.items(), key=lambda kv: kv[1]):
        end = end if finished else stopped_at
        inside = [rss for t, rss in samples if start <= t <= end]
        costs[name] = ComponentCost(end - start, max(inside, default=0), killed=not finished)
    return costs


def growth_exponents(points: Sequence[ScalePoint], component: str) -> list[float | None]:
    """log(t₂/t₁) / log(n₂/n₁) in interactions between consecutive finished scales (None where unmeasured)."""
    out: list[float | None] = []
    for a, b in itertools.pairwise(points):
        ca, cb = a.components.get(component), b.components.get(component)
        unmeasured = ca is None or cb is None or ca.killed or cb.killed
        if unmeasured or ca.seconds <= 0 or cb.seconds <= 0 or b.interactions == a.interactions:
            out.append(None)
        else:
            out.append(math.log(cb.seconds / ca.seconds) / math.log(b.interactions / a.interactions))
    return out


def run_scale(scale: float, out: str, limit_min: float, trainer_config: str) -> ScalePoint:
    """Generates the data at `scale` and runs the pipeline on it in a child process."""
    from pipeline import configs
    from pipeline.demo import synthetic_data

    data_dir, run_dir = os.path.join(out, f"data-{scale:g}x"), os.path.join(out, f"run-{scale:g}x")
    users, items = max(1, round(scale * OFFICE_USERS)), max(2, round(scale * OFFICE_ITEMS))
    counts = synthetic_data.generate(
        data_dir, users, items, seed=0, mean_interactions=OFFICE_INTERACTIONS_PER_USER
    )
    point = ScalePoint(scale, users, items, counts["interactions"])
    print(f"{scale:g}×: {users:,} users, {items:,} items, {point.interactions:,} interactions", flush=True)
    command = [sys.executable, "-m", "pipeline.local_runner", "--data", data_dir, "--output", run_dir]
    command += ["--trainer-config", trainer_config]
    shutil.rmtree(run_dir, ignore_errors=True)  # its ML Metadata must hold this run's executions only
    with open(os.path.join(out, f"run-{scale:g}x.log"), "w", encoding="utf-8") as log:
        start = time.time()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sampler = RssSampler(child.pid)
        sampler.start()
        try:
            code = _wait(child, sampler, start + limit_min * 60)
            point.stopped = "" if code == 0 else f"the pipeline failed (exit {code}; see run-{scale:g}x.log)"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # Beam's worker processes too
            child.wait()
            point.stopped = f"passed the {limit_min:g}-min limit"
        finally:
            sampler.stop()
    point.seconds = time.time() - start
    point.peak_rss = max((rss for _, rss in sampler.samples), default=0)
    metadata = configs.run_paths(run_dir)["metadata_path"]
    if os.path.exists(metadata):
        point.components = attribute(component_intervals(metadata), sampler.samples, start + point.seconds)
    return point


def _wait(child: subprocess.Popen, sampler: RssSampler, deadline: float) -> int:
    """The child's exit code; a progress line every `PROGRESS_S`; TimeoutExpired past `deadline`."""
    start = time.time()
    while True:
        try:
            return child.wait(timeout=max(0.0, min(PROGRESS_S, deadline - time.time())))
        except subprocess.TimeoutExpired:
            if time.time() >= deadline:
                raise
            rss = sampler.samples[-1][1] if sampler.samples else 0
            print(f"  {(time.time() - start) / 60:.0f} min, RSS {rss / GIB:.2f} GiB", flush=True)


def table(points: Sequence[ScalePoint]) -> str:
    """Markdown: one row per component, seconds / peak GiB per scale, and the growth exponents."""
    names = list(dict.fromkeys(n for p in points for n in p.components))
    head = ["component", *(f"{p.scale:g}× ({p.interactions:,} interactions)" for p in points)]
    head += [f"exponent {a.scale:g}×→{b.scale:g}×" for a, b in itertools.pairwise(points)]
    rows = []
    for name in names:
        cells = [_cost(p.components.get(name)) for p in points]
        cells += ["–" if e is None else f"{e:.2f}" for e in growth_exponents(points, name)]
        rows.append([name, *cells])
    rows.append(["**whole run**", *(_cost(ComponentCost(p.seconds, p.peak_rss)) for p in points)])
    rows[-1] += [""] * (len(head) - len(rows[-1]))
    rows.append(["dominant step", *(_dominant(p) for p in points)] + [""] * (len(points) - 1))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    stopped = [f"- {p.scale:g}×: {p.stopped}" for p in points if p.stopped]
    return "\n".join(lines + ([""] + stopped if stopped else [])) + "\n"


def _cost(cost: ComponentCost | None) -> str:
    if cost is None:
        return "–"
    peak = f"{cost.peak_rss / GIB:.2f} GiB" if cost.peak_rss else "– GiB"  # no sample fell inside it
    return f"{cost.seconds:,.0f} s / {peak}" + (" (stopped)" if cost.killed else "")


def _dominant(point: ScalePoint) -> str:
    if not point.components:
        return "–"
    name, cost = max(point.components.items(), key=lambda kv: kv[1].seconds)
    return f"{name} ({cost.seconds / max(point.seconds, 1e-9):.0%})"


def plot(points: Sequence[ScalePoint], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(n for p in points for n in p.components))
    # Resolvers and gates take milliseconds at every size and would crowd the plot; the table lists them.
    names = [n for n in names if max(p.components[n].seconds for p in points if n in p.components) >= 1]
    colours = plt.get_cmap("tab10").colors
    for index, name in enumerate(names):
        measured = [(p.interactions, p.components[name].seconds) for p in points if name in p.components]
        ax.plot(*zip(*measured, strict=True), marker="o", color=colours[index % 10], label=name)
    whole = [(p.interactions, p.seconds) for p in points]
    ax.plot(*zip(*whole, strict=True), "k--", marker="s", label="whole run")
    n0, t0 = whole[0]
    ax.plot(
        [n0, whole[-1][0]], [t0, t0 * whole[-1][0] / n0], ":", color="grey", label="linear from the first"
    )
    ax.set(xscale="log", yscale="log", xlabel="interactions", ylabel="wall seconds")
    ax.set_title("tailtower pipeline cost against data size (steps ≥ 1 s)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_points(path: str) -> list[ScalePoint]:
    """The points a run wrote to bench-scale.json."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [
        ScalePoint(**{**row, "components": {n: ComponentCost(**c) for n, c in row["components"].items()}})
        for row in rows
    ]


def parse_scales(text: str) -> tuple[float, ...]:
    try:
        scales = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--scales must be numbers like 1,10: {text!r}") from e
    if not scales or not all(0 < s < math.inf for s in scales):
        raise argparse.ArgumentTypeError(f"--scales must be positive numbers like 1,10: {text!r}")
    return tuple(sorted(set(scales)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scales", type=parse_scales, default=DEFAULT_SCALES, help="multiples of office, 1,10"
    )
    parser.add_argument("--out", default="bench-scale")
    parser.add_argument("--limit-min", type=float, default=DEFAULT_LIMIT_MIN, help="per scale")
    parser.add_argument(
        "--trainer-config", default="{}", help="JSON of TrainerConfig fields (default: CPU defaults)"
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    points: list[ScalePoint] = []
    for scale in args.scales:
        points.append(run_scale(scale, args.out, args.limit_min, args.trainer_config))
        report = table(points)
        print(report, flush=True)
        with open(os.path.join(args.out, "bench-scale.md"), "w", encoding="utf-8") as f:
            f.write(report)
        with open(os.path.join(args.out, "bench-scale.json"), "w", encoding="utf-8") as f:
            json.dump([dataclasses.asdict(p) for p in points], f, indent=1)
        plot(points, os.path.join(args.out, "bench-scale.png"))
        if points[-1].stopped:
            print(f"stopping at {scale:g}×: {points[-1].stopped}", flush=True)
            break


if __name__ == "__main__":
    main()
