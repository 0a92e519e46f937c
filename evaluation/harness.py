"""`make eval`: offline evaluation of the baselines and our system on one dataset, same split for all.

    scripts/env python -m evaluation.harness --data DATA_DIR --out OUT_DIR [--k 10] [--seed 0]
        [--protocols standard,cold_items] [--systems baselines,ours] [--ease-lambdas 50,200,500]
        [--history excluded|kept] [--rating-threshold 4] [--time-ties line|item_id] [--bert NAME_OR_DIR]
        [--trainer-config JSON]
        [--sweep 'mmr_lambda=0.1,0.5;xquad_lambda=0.1,0.5'] [--train-variants '[{"logq_beta": 0.5}]']
        [--reuse-runs] [--no-ild]

Every option is checked before anything runs: a bad trainer key, in --trainer-config or in any of the
--train-variants, or an unknown --sweep knob fails at once, naming it.

For each protocol (see evaluation/split.py) it fits MostPop, ItemKNN and EASE (each λ) on the split's fit
data, trains our system with the project's pipeline on a derived dataset (evaluation/pipeline_run.py),
scores every test user through the pushed model's `recommend` signature at each knob setting of the sweep
(no retraining) and, with --train-variants, retrains once per trainer override. Writes OUT/metrics.json,
OUT/metrics.md, OUT/popularity-<protocol>.png, OUT/pareto-<protocol>.png, OUT/cold-<protocol>.png (where
some test target is cold: the cold-target users' recall against the others', e.g. along the new_item_boost
sweep) and OUT/report.html.

--history kept ranks every system over the whole catalog, the user's fit items included (RecBole's protocol,
which the text-based sequential recommenders report; our model is asked with keep_history=1); the default
excludes them. All three outputs name the history protocol: its figures are not comparable with the other's.

To reproduce the README reference figures on ml-latest-small use `--rating-threshold 0 --time-ties item_id`
(every rating a positive, equal timestamps ordered by item id); the defaults follow the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from evaluation import baselines, data, metrics, ranking, report, split
from pipeline import configs
from trainer import blend, features
from trainer.config import TrainerConfig

if TYPE_CHECKING:  # TensorFlow is imported only when our system runs
    from evaluation.served_model import ServedModel

# The knobs of the `recommend` signature (trainer/export.py) that --sweep may name, and the values each is
# swept at by default: the re-ranking λs over their range; the new-item boost (added on top of the cold
# offset the Trainer chose) at the values that offset is chosen among, in units of the towers' cosine, and
# only for a model with new items. keep_history is the --history protocol, never swept.
LAMBDA_SWEEP = (0.1, 0.25, 0.5, 0.75, 1.0)
DEFAULT_SWEEP = {
    features.MMR_LAMBDA: LAMBDA_SWEEP,
    features.XQUAD_LAMBDA: LAMBDA_SWEEP,
    features.NEW_ITEM_BOOST: tuple(v for v in blend.COLD_OFFSETS if v),
}
KNOBS = tuple(DEFAULT_SWEEP)
OUR_SYSTEM = "tailtower"
SYSTEMS = ("baselines", "ours")
LAST_ITEM = "last item"  # baselines scored from the most recent history item only
_START = time.monotonic()


def log(message: str) -> None:
    print(f"[eval {time.monotonic() - _START:7.1f}s] {message}", flush=True)


@dataclasses.dataclass
class Ranked:
    """One system at one setting: its top-K lists on one protocol's split."""

    name: str
    settings: dict
    recs: np.ndarray


@dataclasses.dataclass(frozen=True)
class Options:
    data: str
    out: str
    k: int = configs.EvalGateConfig.top_k  # the pipeline gates on the same K
    seed: int = 0
    protocols: tuple[str, ...] = (split.STANDARD, split.COLD_ITEMS)
    history: str = split.HISTORY_EXCLUDED  # split.HISTORY_PROTOCOLS: whether fit items may be recommended
    systems: tuple[str, ...] = SYSTEMS
    ease_lambdas: tuple[float, ...] = baselines.EASE_LAMBDAS
    rating_threshold: float = data.RATING_THRESHOLD
    time_ties: str = data.DEFAULT_TIE_ORDER
    # Its `bert` is also the encoder of the ILD item vectors.
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    sweep: dict[str, tuple[float, ...]] | None = None  # None: every knob the model has, default values
    train_variants: tuple[dict, ...] = ()  # TrainerConfig overrides of `trainer`, checked by parse_args
    reuse_runs: bool = False
    ild: bool = True

    def __post_init__(self):
        if self.history not in split.HISTORY_PROTOCOLS:
            raise ValueError(f"history: {self.history!r} is not one of {split.HISTORY_PROTOCOLS}")

    @property
    def keep_history(self) -> bool:
        """Whether fit items are ranked too (the history-kept protocol)."""
        return self.history == split.HISTORY_KEPT


# ------------------------------------------------------------------------------------------ systems
def run_baselines(s: split.Split, options: Options) -> list[Ranked]:
    """MostPop, ItemKNN and EASE on the fit matrix; ItemKNN and EASE also scored from each user's last item.

    The "last item" rows are the order-aware reading of the same models (the neighbours of the most recent
    item only): our query tower sees the history in order, the classic baselines do not.
    """
    x = s.fit_matrix()
    last = s.last_item_matrix()
    exclude = None if options.keep_history else x

    def rank(scorer: Callable, read: sp.csr_matrix) -> np.ndarray:  # read: the rows the scorer reads
        return ranking.rank_in_batches(lambda lo, hi: scorer(read[lo:hi]), len(s.users), options.k, exclude)

    fits: list[tuple[str, dict, Callable, bool]] = [
        ("MostPop", {}, lambda: baselines.fit_most_pop(x), False),
        ("ItemKNN (cosine)", {}, lambda: baselines.fit_item_knn(x), True),
    ]
    fits += [
        (f"EASE λ={lam:g}", {"lambda": lam}, lambda lam=lam: baselines.fit_ease(x, lam), True)
        for lam in options.ease_lambdas
    ]
    results, from_last = [], []
    for name, settings, fit, also_from_last in fits:
        log(f"{s.protocol}: fitting and ranking {name}")
        scorer = fit()
        recs = rank(scorer, x)
        results.append(Ranked(name, {"system": name, **settings}, recs))
        if also_from_last:
            recs = rank(scorer, last)
            last_name = f"{name}, {LAST_ITEM}"
            from_last.append(Ranked(last_name, {"system": last_name, **settings, "history": LAST_ITEM}, recs))
    results += from_last
    _mark_best_ease(results, s)
    return results


def _mark_best_ease(results: list[Ranked], s: split.Split) -> None:
    """Flags the EASE λ with the best test recall (ties: the smaller λ), as the reference reports it; the
    full-history and the last-item readings each get their own."""
    for history in (None, LAST_ITEM):
        group = [r for r in results if "lambda" in r.settings and r.settings.get("history") == history]
        _mark_best(group, s)


def _mark_best(ease: list[Ranked], s: split.Split) -> None:
    if ease:
        best = max(ease, key=lambda r: (metrics.recall(r.recs, s.test), -r.settings["lambda"]))
        for r in ease:
            r.settings["best"] = r is best


def run_ours(
    dataset: data.Dataset, s: split.Split, options: Options
) -> tuple[list[Ranked], ServedModel | None]:
    """Trains (once per trainer variant), then ranks at every knob setting. Returns the results and the
    first served model (for its item vectors)."""
    from evaluation import pipeline_run
    from evaluation.served_model import ServedModel

    data_dir = pipeline_run.write_training_dataset(
        dataset, s, os.path.join(options.out, "derived", s.protocol)
    )
    results, first_model = [], None
    variants = [({}, OUR_SYSTEM)] + [(v, f"{OUR_SYSTEM} {_describe(v)}") for v in options.train_variants]
    for index, (variant, system) in enumerate(variants):
        trainer = with_overrides(options.trainer, variant)
        changed = _changed(trainer)
        run_dir = os.path.join(options.out, "runs", f"{s.protocol}-{index}")
        log(f"{s.protocol}: training {system} with the pipeline into {run_dir} (trainer {changed})")
        model = ServedModel(
            pipeline_run.train(data_dir, run_dir, trainer, options.reuse_runs, options.rating_threshold)
        )
        first_model = first_model or model
        base = {"system": system, "trainer": changed, "model_dir": model.model_dir, "blend": model.blend()}
        log(f"{s.protocol}: the Trainer chose the served blend {base['blend']}")
        log(
            f"{s.protocol}: scoring {len(s.users)} users through `recommend` (knobs: {model.knobs or 'none'})"
        )
        recs = model.rank(s, options.k, keep_history=options.keep_history)
        results.append(Ranked(system, dict(base), recs))
        if index == 0:  # the knob sweep runs on the default-trained model only
            results += _sweep(model, s, options, system, base)
    return results, first_model


def _sweep(model: ServedModel, s: split.Split, options: Options, system: str, base: dict) -> list[Ranked]:
    sweep = options.sweep
    if sweep is None:
        sweep = {knob: values for knob, values in DEFAULT_SWEEP.items() if knob in model.knobs}
        if features.NEW_ITEM_BOOST in sweep and not model.new_items():
            del sweep[features.NEW_ITEM_BOOST]  # it would change no list
            log(f"  no catalog item is new to the model: no {features.NEW_ITEM_BOOST} sweep")
    results = []
    for knob, values in sweep.items():
        if knob not in model.knobs:
            log(f"  the model has no `{knob}` input; skipping its sweep (knobs: {model.knobs})")
            continue
        for value in values:
            log(f"  {knob}={value:g}")
            settings = {**base, knob: value, "sweep": knob, "value": value}
            results.append(
                Ranked(
                    f"{system} {knob}={value:g}",
                    settings,
                    model.rank(s, options.k, {knob: value}, keep_history=options.keep_history),
                )
            )
    return results


def _describe(variant: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(variant.items()))


def with_overrides(trainer: TrainerConfig, overrides: dict) -> TrainerConfig:
    """`trainer` with JSON-decoded `overrides` (checked and converted like a custom_config)."""
    return TrainerConfig.from_custom_config({**dataclasses.asdict(trainer), **overrides})


def _changed(trainer: TrainerConfig) -> dict:
    """The fields that differ from TrainerConfig's defaults (what metrics.json records)."""
    defaults = TrainerConfig()
    return {k: v for k, v in dataclasses.asdict(trainer).items() if v != getattr(defaults, k)}


# ------------------------------------------------------------------------------------------ metrics
def item_vectors(dataset: data.Dataset, options: Options, model: ServedModel | None) -> np.ndarray | None:
    """BERT item vectors for ILD: the served model's cache when complete, else encoded here."""
    if not options.ild:
        return None
    vectors = model.text_vectors(dataset.item_ids) if model is not None else None
    if vectors is not None:
        log("ILD vectors: the SavedModel's cached BERT text vectors")
        return vectors
    from evaluation import item_vectors as encoding

    bert = options.trainer.bert
    log(f"ILD vectors: encoding {len(dataset.items)} item texts with {bert}")
    texts = [item.text for item in dataset.items]
    return encoding.cached_item_vectors(dataset.item_ids, texts, bert, os.path.join(options.out, "cache"))


def to_entry(result: Ranked, s: split.Split, vectors: np.ndarray | None, k: int) -> dict:
    values = metrics.all_metrics(result.recs, s.test, s.counts, s.is_tail, vectors, k)
    name = result.name if s.protocol == split.STANDARD else f"{result.name} [{s.protocol}]"
    settings = {"protocol": s.protocol, **result.settings}
    return {"name": name, **{key: report.clean(v) for key, v in values.items()}, "settings": settings}


# ------------------------------------------------------------------------------------------ main
def evaluate(options: Options) -> list[dict]:
    """Runs everything and writes the outputs; returns the metrics.json entries."""
    os.makedirs(options.out, exist_ok=True)
    log(f"loading {options.data} (history {options.history})")
    dataset = data.load_dataset(options.data, options.rating_threshold, options.time_ties)
    log(
        f"{len(dataset.items)} items, {len(dataset.positives)} users, "
        f"{sum(len(p) for p in dataset.positives.values())} positives; not used: {dataset.dropped}"
    )
    entries, model, per_protocol = [], None, []
    for protocol in options.protocols:
        s = split.leave_last_out(dataset, protocol, options.seed)
        log(
            f"{protocol}: {len(s.users)} test users, {int(s.made_cold.sum())} items made cold, "
            f"{int(s.is_tail.sum())} tail items"
        )
        results = run_baselines(s, options) if "baselines" in options.systems else []
        if "ours" in options.systems:
            ours, served = run_ours(dataset, s, options)
            results += ours
            model = model or served
        per_protocol.append((s, results))
    vectors = item_vectors(dataset, options, model)
    for s, results in per_protocol:
        entries += [to_entry(r, s, vectors, options.k) for r in results]
    write_outputs(options, dataset.name, entries, per_protocol)
    return entries


def write_outputs(options: Options, name: str, entries: list[dict], per_protocol: list) -> None:
    table = report.markdown_table(entries, options.k)
    print("\n" + table + "\n", flush=True)
    with open(os.path.join(options.out, "metrics.md"), "w", encoding="utf-8") as f:
        f.write(f"# {name}, K={options.k}, history {options.history}\n\n")
        f.write(f"{report.history_note(options.history)}.\n\n{table}\n")
    report.write_json(os.path.join(options.out, "metrics.json"), name, options.k, options.history, entries)
    images = []
    for s, results in per_protocol:
        shown = {r.name: r.recs[:, : options.k] for r in results if _is_base(r)}
        images.append(os.path.join(options.out, f"popularity-{s.protocol}.png"))
        report.plot_popularity(images[-1], s.counts, shown, options.k)
        images.append(os.path.join(options.out, f"pareto-{s.protocol}.png"))
        protocol_entries = [e for e in entries if e["settings"]["protocol"] == s.protocol]
        report.plot_pareto(images[-1], protocol_entries, options.k)
        cold = os.path.join(options.out, f"cold-{s.protocol}.png")
        if report.plot_cold_tradeoff(cold, protocol_entries, options.k):  # only where a target is cold
            images.append(cold)
    notes = [
        f"dataset {options.data}; protocols {', '.join(options.protocols)}; seed {options.seed}",
        report.history_note(options.history),
        "metric definitions: evaluation/metrics.py; protocols: evaluation/split.py",
    ]
    report.write_html(
        os.path.join(options.out, "report.html"),
        f"tailtower offline evaluation: {name}, history {options.history}",
        entries,
        options.k,
        images,
        notes,
    )
    log(f"wrote metrics.json, metrics.md, report.html and {len(images)} plots to {options.out}")


def _is_base(result: Ranked) -> bool:
    """Lists worth a popularity curve: the full-history baselines but the non-best EASE, and our unswept
    models."""
    settings = result.settings
    return "sweep" not in settings and "history" not in settings and settings.get("best", True)


# ------------------------------------------------------------------------------------------ CLI
def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def parse_sweep(text: str | None) -> dict[str, tuple[float, ...]] | None:
    """'mmr_lambda=0.1,0.5;xquad_lambda=0.5' → {"mmr_lambda": (0.1, 0.5), "xquad_lambda": (0.5,)}.

    Raises:
      ValueError: on a part that is not `knob=v1[,v2...]` of numbers, or a knob not in KNOBS.
    """
    if text is None:
        return None
    sweep = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        knob, _, values = (v.strip() for v in part.partition("="))
        if knob not in KNOBS:
            raise ValueError(f"--sweep: unknown knob {knob!r} in {part!r}; known knobs: {list(KNOBS)}")
        malformed = ValueError(f"--sweep: expected {knob}=v1[,v2...] with numbers, got {part!r}")
        try:
            sweep[knob] = _floats(values)
        except ValueError:
            raise malformed from None
        if not sweep[knob]:
            raise malformed
    return sweep


def parse_train_variants(text: str, trainer: TrainerConfig) -> tuple[dict, ...]:
    """The --train-variants JSON list of TrainerConfig overrides, each checked on top of `trainer`."""
    try:
        variants = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--train-variants is not valid JSON ({e}): {text!r}") from e
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise ValueError(f"--train-variants must be a JSON list of objects, got {text!r}")
    for index, variant in enumerate(variants):
        try:
            with_overrides(trainer, variant)
        except ValueError as e:
            raise ValueError(f"--train-variants[{index}] {json.dumps(variant)}: {e}") from e
    return tuple(variants)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parse_args(argv: list[str] | None = None) -> Options:
    """The checked Options; a bad option exits with a usage error (exit 2) naming it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (any components.data_files layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--k", type=int, default=Options.k)
    p.add_argument("--seed", type=int, default=Options.seed, help="seed of the cold-item draw")
    p.add_argument("--protocols", default=",".join(Options.protocols))
    p.add_argument(
        "--history",
        default=Options.history,
        choices=split.HISTORY_PROTOCOLS,
        help="excluded: fit items are never recommended; kept: they are ranked too (RecBole's protocol)",
    )
    p.add_argument("--systems", default=",".join(Options.systems), help="comma list of: baselines, ours")
    p.add_argument("--ease-lambdas", default=",".join(f"{v:g}" for v in Options.ease_lambdas))
    p.add_argument("--rating-threshold", type=float, default=Options.rating_threshold)
    p.add_argument("--time-ties", default=Options.time_ties, choices=sorted(data.TIE_ORDERS))
    p.add_argument(
        "--bert",
        default=None,
        help=f"BERT for the pipeline and for ILD vectors (default {TrainerConfig.bert}); the same setting "
        'as a "bert" key in --trainer-config',
    )
    p.add_argument("--trainer-config", default="{}", help="JSON of TrainerConfig fields for every training")
    p.add_argument(
        "--sweep",
        default=None,
        help="knob=v1,v2;knob2=... (default: each model knob at "
        + "; ".join(f"{knob} {','.join(map(str, values))}" for knob, values in DEFAULT_SWEEP.items())
        + "; '' = none)",
    )
    p.add_argument(
        "--train-variants", default="[]", help="JSON list of TrainerConfig overrides, one retrain each"
    )
    p.add_argument("--reuse-runs", action="store_true", help="reuse pushed models already under OUT/runs")
    p.add_argument("--no-ild", action="store_true", help="skip ILD (no BERT encoding)")
    a = p.parse_args(argv)
    protocols, systems = _comma_list(a.protocols), _comma_list(a.systems)
    for value, allowed in [(protocols, split.PROTOCOLS), (systems, SYSTEMS)]:
        if not value or set(value) - set(allowed):
            p.error(f"{','.join(value)!r}: expected a comma list of {allowed}")
    if a.k < 1:
        p.error(f"--k must be >= 1, got {a.k}")
    try:
        trainer = configs.trainer_config(a.trainer_config, a.bert)
        return Options(
            data=os.path.abspath(a.data),
            out=os.path.abspath(a.out),
            k=a.k,
            seed=a.seed,
            protocols=protocols,
            history=a.history,
            systems=systems,
            ease_lambdas=_floats(a.ease_lambdas),
            rating_threshold=a.rating_threshold,
            time_ties=a.time_ties,
            trainer=trainer,
            sweep=parse_sweep(a.sweep),
            train_variants=parse_train_variants(a.train_variants, trainer),
            reuse_runs=a.reuse_runs,
            ild=not a.no_ild,
        )
    except ValueError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> None:
    from pipeline.runs import progress

    options = parse_args(argv)
    progress.show_progress()  # TFX/Beam/TF log lines filtered down to component events and our own
    evaluate(options)


if __name__ == "__main__":
    main()
