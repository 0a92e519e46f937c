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
    assert "EASE λ=50" in (tmp_path / "report.html").read_text()


def test_same_seed_same_results_and_another_seed_changes_the_cold_draw(synthetic, tmp_path):
    first = harness.evaluate(_baselines_only(synthetic, tmp_path / "a"))
    second = harness.evaluate(_baselines_only(synthetic, tmp_path / "b"))
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (tmp_path / "b" / "metrics.json").read_bytes()
    other = harness.evaluate(_baselines_only(synthetic, tmp_path / "c", seed=5))
    assert first == second
    assert first[:9] == other[:9]  # the standard protocol has no randomness
    assert first[9:] != other[9:]


def test_parse_sweep_and_bad_options():
    assert harness.parse_sweep("mmr_lambda=0.1,0.5; xquad_lambda=1") == {
        "mmr_lambda": (0.1, 0.5),
        "xquad_lambda": (1.0,),
    }
    assert harness.parse_sweep("") == {}
    assert harness.parse_sweep(None) is None
    known = r"known knobs: \['mmr_lambda', 'xquad_lambda'\]"
    with pytest.raises(ValueError, match=r"unknown knob 'mmr_lamda' in 'mmr_lamda=0.5'; " + known):
        harness.parse_sweep("mmr_lamda=0.5")
    malformed = re.escape("expected xquad_lambda=v1[,v2...] with numbers, got 'xquad_lambda=x'")
    with pytest.raises(ValueError, match=malformed):
        harness.parse_sweep("mmr_lambda=0.5;xquad_lambda=x")
    with pytest.raises(SystemExit):
        harness.parse_args(["--data", "d", "--out", "o", "--protocols", "standard,weird"])


def test_trainer_options_are_checked_when_parsed(capsys):
    options = harness.parse_args(
        ["--data", "d", "--out", "o", "--bert", "/m", "--trainer-config", '{"epochs": 3}',
         "--train-variants", '[{"logq_beta": 0.5}]']
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
    assert "known keys: ['batch_size', 'bert'," in error


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
            "mmr_lambda=0.5;xquad_lambda=0.5",
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
    assert swept == [("mmr_lambda", 0.5), ("xquad_lambda", 0.5)]  # the recommend signature has both
    assert (tmp_path / "out" / "pareto-standard.png").stat().st_size > 0
