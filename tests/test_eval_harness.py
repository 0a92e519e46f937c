"""evaluation.harness: outputs, determinism and the CLI (baselines only, fast), then one slow end-to-end run
with our system trained by the pipeline on synthetic data and a tiny BERT."""

import json
import os
import re

import numpy as np
import pytest

from evaluation import data, harness, report, split
from pipeline.demo import synthetic_data
from tests.tiny_bert import write_tiny_bert
from trainer.config import TrainerConfig

# Ten epochs: two leave the model hard to tell from a random ranker (tests/test_pipeline_e2e.py).
TRAINER_CONFIG = {"epochs": 10, "batch_size": 128, "embedding_dim": 16}
METRIC_KEYS = {f"{m}@10" for m in report.METRICS}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-data")
    synthetic_data.generate(str(folder), num_users=60, num_items=80, seed=2)
    return str(folder)


def _baselines_only(data_dir, out, seed=0):
    return harness.parse_args(
        ["--data", data_dir, "--out", str(out), "--systems", "baselines", "--seed", str(seed), "--no-ild"]
    )


def test_outputs_and_json_shape(synthetic, tmp_path):
    entries = harness.evaluate(_baselines_only(synthetic, tmp_path))
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["k"] == 10 and written["dataset"] == os.path.basename(synthetic)
    assert written["history_protocol"] == split.HISTORY_EXCLUDED
    assert written["systems"] == entries
    names = [e["name"] for e in entries]
    assert names[:5] == ["MostPop", "ItemKNN (cosine)", "EASE λ=50", "EASE λ=200", "EASE λ=500"]
    assert names[5:9] == [
        "ItemKNN (cosine), last item",
        "EASE λ=50, last item",
        "EASE λ=200, last item",
        "EASE λ=500, last item",
    ]
    assert names[9] == "MostPop [cold_items]" and len(names) == 18
    for entry in entries:
        assert METRIC_KEYS <= set(entry)
        assert entry["ild@10"] is None  # --no-ild
        assert entry["settings"]["protocol"] in split.PROTOCOLS
    # Standard protocol: no test target is cold in this data; the cold protocol makes some.
    assert entries[0]["cold_recall@10"] is None
    assert isinstance(entries[9]["cold_recall@10"], float)
    # One best EASE λ per protocol among the full-history entries, one among the last-item ones.
    best = [e["settings"] for e in entries if e["settings"].get("best")]
    assert len(best) == 4 and sum(b.get("history") == harness.LAST_ITEM for b in best) == 2
    for name in ("metrics.md", "report.html", "popularity-standard.png", "pareto-cold_items.png"):
        assert (tmp_path / name).stat().st_size > 0
    # The cold trade-off plot only where some test target is cold.
    assert (tmp_path / "cold-cold_items.png").stat().st_size > 0
    assert not (tmp_path / "cold-standard.png").exists()
    assert "EASE λ=50" in (tmp_path / "report.html").read_text()


def test_same_seed_same_results_and_another_seed_changes_the_cold_draw(synthetic, tmp_path):
    first = harness.evaluate(_baselines_only(synthetic, tmp_path / "a"))
    second = harness.evaluate(_baselines_only(synthetic, tmp_path / "b"))
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    other = harness.evaluate(_baselines_only(synthetic, tmp_path / "c", seed=5))
    assert first == second
    assert first[:9] == other[:9]  # the standard protocol has no randomness
    assert first[9:] != other[9:]


def _tiny_split() -> split.Split:
    """Items 0..3; fit histories u0 {0, 1}, u1 {1, 2}, u2 {1}: fit counts [1, 3, 1, 0]."""
    histories = [[0, 1], [1, 2], [1]]
    return split.Split(
        split.STANDARD,
        ("a", "b", "c", "d"),
        ("u0", "u1", "u2"),
        tuple(np.array(h, np.int64) for h in histories),
        np.array([3, 3, 3], np.int64),
        np.full(3, -1),
        {},
        np.zeros(4, bool),
    )


class _KnobModel:
    """A served model stand-in for the sweep: its knobs, how many items are new, the settings it ranked."""

    knobs = ("mmr_lambda", "new_item_boost", "xquad_lambda")

    def __init__(self, new_items: int):
        self._new, self.asked = new_items, []

    def new_items(self) -> int:
        return self._new

    def rank(self, s, k, settings=None, keep_history=False):
        self.asked.append(dict(settings or {}))
        return np.zeros((len(s.users), k), np.int64)


def test_the_default_sweep_boosts_new_items_only_for_a_model_that_has_some(tmp_path):
    options = harness.Options(data="d", out=str(tmp_path))  # sweep None: the defaults
    for new_items, boosted in ((0, False), (3, True)):
        model = _KnobModel(new_items)
        results = harness._sweep(model, _tiny_split(), options, harness.OUR_SYSTEM, {})
        swept = {r.settings["sweep"] for r in results}
        assert ("new_item_boost" in swept) == boosted and {"mmr_lambda", "xquad_lambda"} <= swept
    expected = [{"new_item_boost": v} for v in harness.DEFAULT_SWEEP["new_item_boost"]]
    assert [a for a in model.asked if "new_item_boost" in a] == expected
    # An explicit --sweep is taken as given, new items or not.
    explicit = harness.Options(data="d", out=str(tmp_path), sweep={"new_item_boost": (0.1,)})
    assert [r.name for r in harness._sweep(_KnobModel(0), _tiny_split(), explicit, "t", {})] == [
        "t new_item_boost=0.1"
    ]


def test_baselines_rank_the_fit_items_only_with_the_history_kept(tmp_path):
    options = {"data": "d", "out": str(tmp_path), "k": 2, "ease_lambdas": (1.0,)}
    # MostPop scores the fit counts [1, 3, 1, 0]; ties go to the higher item index.
    excluded = harness.run_baselines(_tiny_split(), harness.Options(**options))[0]
    assert excluded.name == "MostPop"
    assert excluded.recs.tolist() == [[2, 3], [0, 3], [2, 0]]
    kept = harness.run_baselines(_tiny_split(), harness.Options(**options, history=split.HISTORY_KEPT))[0]
    assert kept.recs.tolist() == [[1, 2], [1, 2], [1, 2]]


def test_history_kept_is_written_into_every_output(synthetic, tmp_path):
    flags = "--systems baselines --protocols standard --no-ild --history kept".split()
    options = harness.parse_args(["--data", synthetic, "--out", str(tmp_path), *flags])
    assert options.history == split.HISTORY_KEPT and options.keep_history
    harness.evaluate(options)
    assert json.loads((tmp_path / "metrics.json").read_text())["history_protocol"] == split.HISTORY_KEPT
    markdown = (tmp_path / "metrics.md").read_text()
    assert markdown.startswith(f"# {os.path.basename(synthetic)}, K=10, history kept\n")
    assert report.history_note(split.HISTORY_KEPT) in markdown
    page = (tmp_path / "report.html").read_text()
    assert "history kept" in page and "RecBole" in page


def test_history_option_default_and_bad_values(capsys):
    default = harness.parse_args(["--data", "d", "--out", "o"])
    assert default.history == split.HISTORY_EXCLUDED and not default.keep_history
    with pytest.raises(SystemExit) as exit_info:
        harness.parse_args(["--data", "d", "--out", "o", "--history", "all"])
    assert exit_info.value.code == 2
    assert "--history: invalid choice: 'all' (choose from " in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"history: 'Kept' is not one of \('excluded', 'kept'\)"):
        harness.Options(data="d", out="o", history="Kept")
    # keep_history is the protocol, not a re-ranking knob: --sweep refuses it.
    with pytest.raises(ValueError, match="unknown knob 'keep_history'"):
        harness.parse_sweep("keep_history=1")


def test_parse_sweep_and_bad_options():
    assert harness.parse_sweep("mmr_lambda=0.1,0.5; xquad_lambda=1") == {
        "mmr_lambda": (0.1, 0.5),
        "xquad_lambda": (1.0,),
    }
    assert harness.parse_sweep("") == {}
    assert harness.parse_sweep(None) is None
    known = r"known knobs: \['mmr_lambda', 'xquad_lambda', 'new_item_boost'\]"
    with pytest.raises(ValueError, match=r"unknown knob 'mmr_lamda' in 'mmr_lamda=0.5'; " + known):
        harness.parse_sweep("mmr_lamda=0.5")
    malformed = re.escape("expected xquad_lambda=v1[,v2...] with numbers, got 'xquad_lambda=x'")
    with pytest.raises(ValueError, match=malformed):
        harness.parse_sweep("mmr_lambda=0.5;xquad_lambda=x")
    with pytest.raises(SystemExit):
        harness.parse_args(["--data", "d", "--out", "o", "--protocols", "standard,weird"])


def test_trainer_options_are_checked_when_parsed(capsys):
    options = harness.parse_args(
        [
            "--data",
            "d",
            "--out",
            "o",
            "--bert",
            "/m",
            "--trainer-config",
            '{"epochs": 3}',
            "--train-variants",
            '[{"logq_beta": 0.5}]',
        ]
    )
    assert options.trainer == TrainerConfig(bert="/m", epochs=3)
    assert options.train_variants == ({"logq_beta": 0.5},)
    assert harness.with_overrides(options.trainer, options.train_variants[0]) == TrainerConfig(
        bert="/m", epochs=3, logq_beta=0.5
    )
    # A typo in the second variant fails before the first one trains.
    with pytest.raises(SystemExit) as exit_info:
        harness.parse_args(["--data", "d", "--out", "o", "--train-variants", '[{"epochs": 1}, {"epoch": 1}]'])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "--train-variants[1] {\"epoch\": 1}: Unknown trainer custom_config keys ['epoch']" in error
    assert "known keys: ['" in error and "'batch_size', 'bert'," in error  # sorted, whatever comes first


@pytest.mark.slow
def test_end_to_end_with_our_system(tmp_path):
    """`make eval` equivalent: baselines + the pipeline-trained model, one protocol, a short knob sweep."""
    from trainer import bert

    data_dir = tmp_path / "data"
    synthetic_data.generate(str(data_dir), num_users=60, num_items=80, seed=1)
    tiny = write_tiny_bert(tmp_path / "bert", bert.fetch_minilm(bert.default_cache_dir()) / "vocab.txt")
    options = harness.parse_args(
        [
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "out"),
            "--protocols",
            "standard",
            "--bert",
            str(tiny),
            "--trainer-config",
            json.dumps(TRAINER_CONFIG),
            "--sweep",
            "mmr_lambda=0.5;xquad_lambda=0.5;new_item_boost=0.1",
            "--ease-lambdas",
            "50",
        ]
    )
    entries = harness.evaluate(options)
    ours = [e for e in entries if e["settings"]["system"] == harness.OUR_SYSTEM]
    assert ours, "our system produced no entry"
    base = ours[0]
    assert base["name"] == "tailtower" and "sweep" not in base["settings"]
    # A random ranker finds a user's target among k random items of the n they have not seen with
    # probability k / n: the trained model must do better on the same split.
    dataset = data.load_dataset(str(data_dir), options.rating_threshold, options.time_ties)
    s = split.leave_last_out(dataset, split.STANDARD, options.seed)
    unseen = np.array([s.num_items - len(set(history.tolist())) for history in s.history])
    assert base["recall@10"] > np.mean(np.minimum(1.0, 10 / unseen))
    # ILD comes from the SavedModel's cached text vectors (a tiny BERT gives finite, non-trivial values).
    assert base["ild@10"] is not None
    assert os.path.isdir(base["settings"]["model_dir"])
    # Knobs the model does not have are skipped; those it has each add one entry.
    swept = [(e["settings"]["sweep"], e["settings"]["value"]) for e in ours[1:]]
    # the recommend signature has all three
    assert swept == [("mmr_lambda", 0.5), ("xquad_lambda", 0.5), ("new_item_boost", 0.1)]
    assert (tmp_path / "out" / "pareto-standard.png").stat().st_size > 0
