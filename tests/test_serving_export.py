"""The real exported model (tests/test_export.py's fixture): it loads from a copy in another folder in a
fresh process that imports only tensorflow and tensorflow_text, and the local server serves it over REST and
gRPC with the same answers as an in-process call; every client sends the signature's own dtypes; a request
whose inputs disagree on the batch size is a 400 / INVALID_ARGUMENT; the recommendation service shows the
titles and new-item flags the export wrote into the version's assets.extra/."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import requests
import tensorflow as tf

from serving import service_api, tensors
from serving.catalog_metadata import CATALOG_FILE, CatalogMetadata, ItemInfo
from serving.client_error import ServingClientError
from serving.grpc_client import GrpcClient
from serving.local_client import LocalClient
from serving.recommend_request import knob_names, recommend_inputs, typed_inputs, with_knobs_off
from serving.rest_client import RestClient
from serving.servable import read_signature_defs
from serving.service import RecommendationService
from serving.service_config import ServiceConfig
from tests.test_export import ITEMS, TRAIN_ITEMS
from tests.test_service_e2e import wait_ready
from tests.test_serving_toy import running_server
from trainer import features

MODEL = "tailtower"
OFF = {features.MMR_LAMBDA: 0.0, features.XQUAD_LAMBDA: 0.0, features.NEW_ITEM_BOOST: 0.0}  # knobs off


@pytest.fixture(scope="module")
def pushed(trained, tmp_path_factory):
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
            elif name not in inputs:  # the item filters: a row of "" = no restriction
                inputs[name] = tf.constant([[""]])
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


@pytest.fixture(scope="module")
def server(pushed):
    with running_server(pushed, model_name=MODEL) as running:
        yield running


@pytest.fixture(scope="module")
def clients(server):
    rest = RestClient(f"http://127.0.0.1:{server.rest_port}", MODEL)
    grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", MODEL)
    yield rest, grpc_client
    rest.close()
    grpc_client.close()


def test_server_serves_the_exported_model_over_rest_and_grpc(pushed, clients):
    loaded = tf.saved_model.load(os.path.join(pushed, "1")).signatures[features.RECOMMEND_SIGNATURE]
    users, histories = ["u0", "stranger"], [["i0", "i2"], []]
    results = [
        c.recommend(users, histories, 4, **with_knobs_off({}, knob_names(c.scalar_inputs("recommend"))))
        for c in clients
    ]
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
            **{name: tf.constant([[""], [""]]) for name in features.FILTER_MAX_WIDTH},
        )[features.ITEM_IDS]
        .numpy()
        .astype(str)
    )
    for result in results:
        np.testing.assert_array_equal(np.asarray(result.outputs[features.ITEM_IDS]).astype(str), expected)
    assert results[1].version == 1


def test_requests_carry_the_signature_dtypes_read_from_the_model(pushed, clients):
    # The truth: the SignatureDef in saved_model.pb (what TF Serving checks every input against).
    declared = read_signature_defs(os.path.join(pushed, "1"))[features.RECOMMEND_SIGNATURE].inputs
    # Python ints for the float inputs and for keep_history (int32)
    knobs = {features.MMR_LAMBDA: 0, features.XQUAD_LAMBDA: 1, features.KEEP_HISTORY: 1}
    knobs[features.NEW_ITEM_BOOST] = 0
    inputs = recommend_inputs(["u0", "u1"], [["i0", "i2"], []], 4, knobs)
    expected = {
        features.USER_ID: np.array([b"u0", b"u1"], object),
        features.HISTORY: np.array([[b"i0", b"i2"], [b"", b""]], object),
        features.K: np.array(4, np.int32),
        features.MMR_LAMBDA: np.array(0.0, np.float32),
        features.XQUAD_LAMBDA: np.array(1.0, np.float32),
        features.KEEP_HISTORY: np.array(1, np.int32),
        features.NEW_ITEM_BOOST: np.array(0.0, np.float32),
        **{name: np.array([[b""], [b""]], object) for name in features.FILTER_MAX_WIDTH},
    }
    request = clients[1].predict_request(inputs, features.RECOMMEND_SIGNATURE)  # gRPC (and the bench)
    assert set(request.inputs) == set(declared) == set(expected)
    for name, proto in request.inputs.items():
        assert proto.dtype == declared[name].dtype, name
        value = tensors.to_ndarray(proto)
        assert value.dtype == expected[name].dtype and value.tolist() == expected[name].tolist(), name
    local = LocalClient(os.path.join(pushed, "1"))  # in-process (evaluation, run_results, the bench floor)
    arrays = typed_inputs(inputs, local.input_dtypes(features.RECOMMEND_SIGNATURE))
    assert set(arrays) == set(declared)
    for name, array in arrays.items():
        value = tf.constant(array).numpy()  # as the signature receives it
        assert tf.dtypes.as_dtype(value.dtype).as_datatype_enum == declared[name].dtype, name
        assert value.dtype == expected[name].dtype and value.tolist() == expected[name].tolist(), name


def test_keep_history_1_as_a_json_int_and_over_grpc_returns_history_items(pushed, clients, server):
    users, histories = ["u0", "stranger"], [["i0", "i2"], ["i5"]]
    local = LocalClient(os.path.join(pushed, "1"))
    expected = {
        keep: local.recommend(users, histories, 10, **{**OFF, features.KEEP_HISTORY: keep}).item_ids()
        for keep in (0, 1)
    }
    for row, history in enumerate(histories):
        assert set(history) <= set(expected[1][row]) and not set(history) & set(expected[0][row])
    # The raw REST body: a JSON 1 for the int32 input (RestClient sends the same JSON).
    body = {
        "signature_name": features.RECOMMEND_SIGNATURE,
        "inputs": recommend_inputs(users, histories, 10, {**OFF, features.KEEP_HISTORY: 1}),
    }
    assert '"keep_history": 1' in json.dumps(body)
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict"
    response = requests.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][features.ITEM_IDS] == expected[1]
    for client in clients:
        for keep in (0, 1):
            result = client.recommend(users, histories, 10, **{**OFF, features.KEEP_HISTORY: keep})
            assert result.item_ids() == expected[keep], (type(client).__name__, keep)


MISMATCHED = "user_id has 2 rows but history has 1 (every input needs one row per user)"


def test_mismatched_batch_sizes_are_a_400_over_rest(server):
    base = f"http://127.0.0.1:{server.rest_port}/v1/models/{MODEL}:predict"
    recommend = {
        features.USER_ID: ["u0", "u1"],
        features.HISTORY: [["i0"]],
        features.K: 3,
        features.MMR_LAMBDA: 0.0,
        features.XQUAD_LAMBDA: 0.0,
        features.KEEP_HISTORY: 0,
        features.NEW_ITEM_BOOST: 0.0,
        **{name: [[""], [""]] for name in features.FILTER_MAX_WIDTH},
    }
    rank = {features.USER_ID: ["u0", "u1"], features.HISTORY: [["i0"]], features.ITEM_IDS: [["i1"], ["i2"]]}
    for signature, inputs in ((features.RECOMMEND_SIGNATURE, recommend), (features.RANK_SIGNATURE, rank)):
        response = requests.post(base, json={"signature_name": signature, "inputs": inputs}, timeout=30)
        assert response.status_code == 400, response.text
        assert MISMATCHED in response.json()["error"]


def test_mismatched_batch_sizes_are_invalid_argument_over_grpc(clients):
    inputs = {
        features.USER_ID: ["u0", "u1"],
        features.HISTORY: [["i0"]],
        features.K: 3,
        features.MMR_LAMBDA: 0.0,
        features.XQUAD_LAMBDA: 0.0,
        features.KEEP_HISTORY: 0,
        features.NEW_ITEM_BOOST: 0.0,
        **{name: [[""], [""]] for name in features.FILTER_MAX_WIDTH},
    }
    with pytest.raises(ServingClientError) as raised:
        clients[1].predict(inputs, features.RECOMMEND_SIGNATURE)
    assert raised.value.status == "INVALID_ARGUMENT"
    assert MISMATCHED in raised.value.message


def test_the_service_shows_the_titles_and_new_flags_of_the_version_that_answered(server, pushed, tmp_path):
    # The export wrote assets.extra/catalog.jsonl; the copy in TF Serving's layout carries it.
    metadata = CatalogMetadata(pushed)
    with open(os.path.join(pushed, "1", CATALOG_FILE), encoding="utf-8") as f:
        docs = {doc[features.ITEM_ID]: doc for doc in map(json.loads, f)}
    tail = {item_id: doc[features.IS_TAIL] for item_id, doc in docs.items()}
    assert metadata.items(1) == {
        item_id: ItemInfo(
            f"item {item_id[1:]}",
            item_id not in TRAIN_ITEMS,
            tail[item_id],
            docs[item_id][features.BRAND],
            tuple(docs[item_id][features.CATEGORIES]),
        )
        for item_id in ITEMS
    }
    assert 0 < sum(tail.values()) < len(ITEMS)  # both head and tail items are flagged
    config = ServiceConfig(
        port=0,
        model_endpoint=f"127.0.0.1:{server.grpc_port}",
        model_name=MODEL,
        model_base_path=pushed,
        output=str(tmp_path),
        ready_poll_s=0.1,
    )
    service = RecommendationService(config).start()
    try:
        url = f"http://127.0.0.1:{service.port}"
        wait_ready(url)
        response = requests.post(url + "/v1/recommendations", json={"user_id": "u0", "k": 10}, timeout=30)
        # keep_history is a knob like the others for the service: read from the model, off unless sent.
        asks = [{}, {service_api.KNOBS: {features.KEEP_HISTORY: 1}}]
        with_history = [
            requests.post(
                url + "/v1/recommendations",
                json={"user_id": "u0", "k": 10, "history": ["i0"], **ask},
                timeout=30,
            )
            for ask in asks
        ]
    finally:
        service.stop()
    for answer in with_history:
        assert answer.status_code == 200, answer.text
    shown_with_history = [[item[features.ITEM_ID] for item in a.json()["items"]] for a in with_history]
    assert "i0" not in shown_with_history[0] and len(shown_with_history[0]) == 9
    assert sorted(shown_with_history[1]) == sorted(ITEMS)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_version"] == "1"
    shown = {item[features.ITEM_ID]: (item[features.TITLE], item[features.IS_NEW]) for item in doc["items"]}
    assert len(doc["items"]) == len(shown)  # no repeats
    assert shown == {item_id: (f"item {item_id[1:]}", item_id not in TRAIN_ITEMS) for item_id in ITEMS}
    # No history: every item's reason is the model's "popular" (or "new_item"), with no supporting item.
    assert {item[service_api.REASON][service_api.CODE] for item in doc["items"]} <= {"popular", "new_item"}
    # With history ["i0"]: the one history item supports every explained item, and the text names its title.
    for item in with_history[0].json()["items"]:
        reason = item[service_api.REASON]
        if reason[service_api.CODE] in ("similar_to", "tail_discovery"):
            assert reason[features.BECAUSE] == "i0" and "“item 0”" in reason[service_api.MESSAGE]
    codes = [item[service_api.REASON][service_api.CODE] for item in with_history[0].json()["items"]]
    assert {"similar_to", "tail_discovery"} & set(codes)
