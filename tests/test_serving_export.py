"""The real exported model (tests/test_export.py's fixture): it loads from a copy in another folder in a
fresh process that imports only tensorflow and tensorflow_text, and the local server serves it over REST and
gRPC with the same answers as an in-process call."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from serving.client import with_default_knobs
from serving.grpc_client import GrpcClient
from serving.rest_client import RestClient
from tests.test_export import trained  # noqa: F401  (module fixture: a tiny trained + exported model)
from tests.test_serving_toy import running_server
from trainer import features

MODEL = "tailtower"


@pytest.fixture(scope="module")
def pushed(trained, tmp_path_factory):  # noqa: F811
    """A copy of the export in TF Serving's layout, in a folder unrelated to the one it was written to."""
    base = str(tmp_path_factory.mktemp("elsewhere") / MODEL)
    shutil.copytree(trained[0], os.path.join(base, "1"))
    return base


def test_pushed_model_loads_in_a_fresh_process_with_only_tensorflow_and_tensorflow_text(pushed):
    script = textwrap.dedent(f"""
        import sys
        import tensorflow as tf
        import tensorflow_text  # noqa: F401  (its ops, as TF Serving links them)
        recommend = tf.saved_model.load({os.path.join(pushed, "1")!r}).signatures["recommend"]
        _, specs = recommend.structured_input_signature
        inputs = {{"user_id": tf.constant(["u1"]), "history": tf.constant([["i1", ""]])}}
        for name, spec in specs.items():
            if spec.shape.rank == 0:  # k and the re-ranking knobs (0 = off)
                inputs[name] = tf.constant(3 if name == "k" else 0, spec.dtype)
        ids = recommend(**inputs)["item_ids"].numpy()
        assert ids.shape == (1, 3) and b"i1" not in ids[0], ids
        project = {{"trainer", "serving", "pipeline", "tensorflow_recommenders", "tensorflow_transform"}}
        assert not project & {{name.split(".")[0] for name in sys.modules}}, "imported more than TF + TF Text"
        print("OK", ids.tolist())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=str(os.path.dirname(pushed)),
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("OK")


def test_server_serves_the_exported_model_over_rest_and_grpc(pushed):
    import tensorflow as tf

    loaded = tf.saved_model.load(os.path.join(pushed, "1")).signatures[features.RECOMMEND_SIGNATURE]
    users, histories = ["u0", "stranger"], [["i0", "i2"], []]
    with running_server(pushed, model_name=MODEL) as server:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}", MODEL)
        grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL)
        results = [c.recommend(users, histories, 4, **with_default_knobs(c, {})) for c in (rest, grpc_client)]
        rest.close()
        grpc_client.close()
    knobs = {
        name: tf.constant(0, spec.dtype)
        for name, spec in loaded.structured_input_signature[1].items()
        if spec.shape.rank == 0 and name != features.K
    }
    expected = (
        loaded(
            user_id=tf.constant(users),
            history=tf.constant([["i0", "i2"], ["", ""]]),
            k=tf.constant(4),
            **knobs,
        )[features.ITEM_IDS]
        .numpy()
        .astype(str)
    )
    for result in results:
        np.testing.assert_array_equal(np.asarray(result.outputs[features.ITEM_IDS]).astype(str), expected)
    assert results[1].version == 1
