"""Server settings: TF Serving's flag names and defaults, and the model name shared with the pipeline."""

import ast
import pathlib

from serving import config
from serving.server import parse_args


def test_model_name_matches_the_pipeline():
    # pipeline/configs.py is read, not imported: importing it pulls in TFX (~15 s).
    source = (pathlib.Path(__file__).parents[1] / "pipeline" / "configs.py").read_text()
    assigned = {
        node.targets[0].id: node.value.value
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }
    assert assigned["MODEL_NAME"] == config.MODEL_NAME


def test_defaults_are_tf_servings():
    settings = parse_args([])
    assert (settings.grpc_port, settings.rest_port, settings.host) == (8500, 8501, "127.0.0.1")
    assert settings.poll_interval_s == 1.0
    assert settings.model_base_path == "demo-run/serving/tailtower"


def test_tf_serving_flag_names():
    settings = parse_args(
        [
            "--port",
            "9000",
            "--rest_api_port",
            "9001",
            "--model_name",
            "m",
            "--model_base_path",
            "/models/m",
            "--file_system_poll_wait_seconds",
            "5",
            "--version_labels",
            "stable=3,canary=4",
            "--max_k",
            "7",
            "--no_warmup",
        ]
    )
    assert (settings.grpc_port, settings.rest_port, settings.model_name) == (9000, 9001, "m")
    assert (settings.model_base_path, settings.poll_interval_s, settings.max_k) == ("/models/m", 5.0, 7)
    assert settings.version_labels == {"stable": 3, "canary": 4}
    assert settings.warmup is False
