"""bench-serve's request building and table rows (the load itself runs in `make bench-serve`)."""

import tensorflow as tf

from serving import bench
from trainer import features


def test_knobs_off_are_the_scalar_inputs_besides_k(tmp_path):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None], tf.string, name=features.USER_ID),
            tf.TensorSpec([None, None], tf.string, name=features.HISTORY),
            tf.TensorSpec([], tf.int32, name=features.K),
            tf.TensorSpec([], tf.float32, name="mmr_lambda"),
        ]
    )
    def recommend(user_id, history, k, mmr_lambda):
        return {features.ITEM_IDS: tf.tile(history[:, :1], [1, k])}

    # As the benchmark sees it: a signature of a loaded SavedModel (keyword inputs only).
    module = tf.Module()
    module.recommend = recommend
    tf.saved_model.save(module, str(tmp_path), signatures={"recommend": recommend.get_concrete_function()})
    signature = tf.saved_model.load(str(tmp_path)).signatures["recommend"]
    assert bench.knobs_off(signature) == {"mmr_lambda": 0.0}


def test_request_set_sends_the_knobs_and_pads_history():
    requests = bench.request_set(20, ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"], 5, {"x": 0.0})
    assert len(requests) == 20
    for request in requests:
        assert request["x"] == 0.0 and request[features.K] == 5
        (history,) = request[features.HISTORY]
        assert len(history) >= 1 and len(set(h for h in history if h)) == len([h for h in history if h])


def test_grpc_requests_carry_the_signature_dtypes():
    (item,) = bench.request_set(1, list("abcdefghijk"), 5, {"mmr_lambda": 0.0})
    request = bench.grpc_request("tailtower", item)
    dtypes = {name: tf.dtypes.as_dtype(proto.dtype) for name, proto in request.inputs.items()}
    assert dtypes == {
        features.USER_ID: tf.string,
        features.HISTORY: tf.string,
        features.K: tf.int32,
        "mmr_lambda": tf.float32,
    }


def test_a_target_whose_requests_all_failed_still_gets_a_row():
    row = bench.Result("gRPC", 1, latencies_s=[], errors=7, wall_s=1.0).row(floor_p99_ms=2.0)
    assert row == "| gRPC | 1 | 0 | - | - | - | 0 | 7 |"
    ok = bench.Result("REST", 1, latencies_s=[0.001, 0.003], errors=0, wall_s=1.0).row(floor_p99_ms=2.0)
    assert ok.startswith("| REST | 1 | 2 | 2.00 |")
