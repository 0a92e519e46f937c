"""The TFMA retrieval metrics on hand-computed cases, driven through the combiners the Evaluator uses."""

import math

import numpy as np
import pytest
from tensorflow_model_analysis.metrics import metric_types

from evaluation import metrics as offline
from evaluation import tfma_metrics as metrics
from trainer import features


def _example(label: float, target: bytes, top_ids: list[bytes], is_tail: list[int], num_tail: int = 4):
    return metric_types.StandardMetricInputs(
        labels=np.array([label]),
        predictions={
            features.TOP_K_IDS: np.array(top_ids, dtype=object),
            features.TOP_K_IS_TAIL: np.array(is_tail),
            features.NUM_TAIL_ITEMS: np.array([num_tail]),
            features.SCORE: np.array([0.5]),
        },
        example_weights=np.array([1.0]),
        features={features.ITEM_ID: np.array([target])},
    )


# Three positives and one negative; tail items of the catalog: t1..t4 (num_tail_items = 4).
EXAMPLES = [
    _example(1.0, b"h1", [b"h1", b"t1", b"h2"], [0, 1, 0]),  # hit at rank 1
    _example(1.0, b"t2", [b"h1", b"h2", b"t2"], [0, 0, 1]),  # hit at rank 3 only
    _example(1.0, b"t3", [b"t1", b"t4", b"h2"], [1, 1, 0]),  # miss
    _example(0.0, b"t3", [b"t3", b"t2", b"t1"], [1, 1, 1]),  # negative: ignored by every metric
]


def _compute(metric: metric_types.Metric, examples, split: int = 2) -> float:
    """Runs the metric's combiner over two partial accumulators merged, as Beam would."""
    (computation,) = metric.computations()
    combiner = computation.combiner
    parts = []
    for chunk in (examples[:split], examples[split:]):
        acc = combiner.create_accumulator()
        for example in chunk:
            acc = combiner.add_input(acc, example)
        parts.append(acc)
    (value,) = combiner.extract_output(combiner.merge_accumulators(parts)).values()
    return value


@pytest.mark.parametrize(
    "metric, expected",
    [
        # K=3: hits on examples 1 and 2 of 3 positives.
        (metrics.RecallAtK(k=3), 2 / 3),
        # K=2: only example 1 hits (example 2's target sits at rank 3).
        (metrics.RecallAtK(k=2), 1 / 3),
        # K=3 tail shares: 1/3, 1/3, 2/3 → mean 4/9.
        (metrics.APLTAtK(k=3), 4 / 9),
        # K=2 tail shares: 1/2, 0, 1 → mean 1/2.
        (metrics.APLTAtK(k=2), 1 / 2),
        # K=3: tail items shown to positives {t1, t2, t4} of 4 (t3 only reached the negative).
        (metrics.TailCoverageAtK(k=3), 3 / 4),
        # K=1: only t1 (example 3's first item).
        (metrics.TailCoverageAtK(k=1), 1 / 4),
    ],
)
def test_metric_values(metric, expected):
    assert _compute(metric, EXAMPLES) == pytest.approx(expected)


def test_metric_names_carry_k():
    assert metrics.RecallAtK(k=5).name == "recall@5"
    assert metrics.APLTAtK(k=10).name == "aplt@10"
    assert metrics.TailCoverageAtK(k=10).name == "tail_coverage@10"


def test_no_positives_gives_nan_recall_and_zero_coverage():
    negatives = [EXAMPLES[3]]
    assert math.isnan(_compute(metrics.RecallAtK(k=3), negatives, split=0))
    assert _compute(metrics.TailCoverageAtK(k=3), negatives, split=0) == 0.0


def test_missing_retrieval_outputs_is_a_clear_error():
    example = metric_types.StandardMetricInputs(
        labels=np.array([1.0]), predictions=np.array([0.3]), features={features.ITEM_ID: np.array([b"a"])}
    )
    combiner = metrics.RecallAtK(k=3).computations()[0].combiner
    with pytest.raises(ValueError, match="top_k_ids"):
        combiner.add_input(combiner.create_accumulator(), example)


def test_candidate_and_baseline_are_scored_separately():
    # With a baseline model TFMA keys labels and predictions by model name.
    def keyed(example):
        return metric_types.StandardMetricInputs(
            labels={"candidate": example.labels, "baseline": example.labels},
            predictions={"candidate": example.predictions, "baseline": EXAMPLES[2].predictions},
            features=example.features,
        )

    computations = metrics.RecallAtK(k=3).computations(model_names=["candidate", "baseline"])
    values = {}
    for computation in computations:
        combiner = computation.combiner
        acc = combiner.create_accumulator()
        for example in EXAMPLES[:2]:
            acc = combiner.add_input(acc, keyed(example))
        ((key, value),) = combiner.extract_output(acc).items()
        values[key.model_name] = value
    # candidate hits both; baseline always answers example 3's list [t1, t4, h2], which holds neither target.
    assert values == {"candidate": 1.0, "baseline": 0.0}


# A served list padded with "" (the catalog ran out): tail items t1 and t2 among 3 items → APLT 2/3, where
# dividing by K = 4 (the TFMA metric before one definition) gave 1/2.
PADDED = [
    _example(1.0, b"t2", [b"h1", b"t1", b"t2", b""], [0, 1, 1, 0]),  # hit at rank 3; tail share 2/3
    _example(1.0, b"h9", [b"", b"", b"", b""], [0, 0, 0, 0]),  # empty list: miss, tail share 0
]


@pytest.mark.parametrize(
    "metric, expected",
    [
        (metrics.RecallAtK(k=4), 1 / 2),
        (metrics.APLTAtK(k=4), (2 / 3 + 0) / 2),
        (metrics.TailCoverageAtK(k=4), 2 / 4),  # t1, t2 of 4 tail items; padding is no item
    ],
)
def test_padding_is_not_counted(metric, expected):
    assert _compute(metric, PADDED, split=1) == pytest.approx(expected)


def test_tfma_and_offline_metrics_agree():
    # The same lists as item indices: h1=0, t1=1, t2=2, h9=3, padding -1; items 1 and 2 are tail.
    recs = np.array([[0, 1, 2, -1], [-1, -1, -1, -1]])
    targets = np.array([2, 3])
    is_tail = np.array([False, True, True, False])
    assert offline.recall(recs, targets) == _compute(metrics.RecallAtK(k=4), PADDED, split=1)
    assert offline.aplt(recs, is_tail) == pytest.approx(_compute(metrics.APLTAtK(k=4), PADDED, split=1))
    assert offline.aplt(recs, is_tail) == pytest.approx(1 / 3)


def test_a_served_list_shorter_than_k_is_an_error():
    # trainer top_k=3 under a gate K=5 would silently cap Recall@5 and APLT@5.
    combiner = metrics.APLTAtK(k=5).computations()[0].combiner
    with pytest.raises(ValueError, match=r"aplt@5: the model serves 3 items per list .* fewer than K=5"):
        combiner.add_input(combiner.create_accumulator(), EXAMPLES[0])
