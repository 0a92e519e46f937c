"""pipeline.run_results.load_recommend (what `make demo` prints) on the toy model, through LocalClient."""

import pytest

from pipeline.runs import results as run_results
from tests.test_serving_toy import save_toy_model


@pytest.fixture(scope="module")
def recommend(tmp_path_factory):
    return run_results.load_recommend(save_toy_model(str(tmp_path_factory.mktemp("toy")), 5))


def test_load_recommend_gives_ids_scores_and_tail_flags(recommend):
    # The toy answers "v<version>-<user>-<j>" with score boost - j and is_tail j % 2.
    assert recommend("u1", ["i1"], 3) == (["v5-u1-0", "v5-u1-1", "v5-u1-2"], [0.0, -1.0, -2.0], [0, 1, 0])
    assert recommend("u1", [], 2, boost=1.5) == (["v5-u1-0", "v5-u1-1"], [1.5, 0.5], [0, 1])


def test_load_recommend_names_an_unknown_knob(recommend):
    with pytest.raises(ValueError, match=r"no knob\(s\) \['mmr_lambda'\]; its knobs: \['boost'\]"):
        recommend("u1", [], 2, mmr_lambda=0.5)
