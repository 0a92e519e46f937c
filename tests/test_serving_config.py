"""Server settings: TF Serving's flag names and defaults, checked when the command line is parsed."""

import re

import pytest

from pipeline import configs
from pipeline.demo import __main__ as demo
from serving import config
from serving.server import parse_args


def test_default_model_base_path_is_where_the_demo_pushes():
    demo_output = demo.parse_args([])[0].output
    pushed = configs.run_paths(demo_output)["serving_model_dir"]
    assert config.ServerConfig().model_base_path == pushed == f"demo-run/serving/{config.MODEL_NAME}"


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


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--port", "70000"], r"grpc_port must be in \[0, 65535\]"),
        (["--rest_api_port", "-1"], r"rest_port must be in \[0, 65535\]"),
        (["--port", "9000", "--rest_api_port", "9000"], "grpc_port and rest_port must differ"),
        (["--max_k", "0"], "max_k must be positive"),
        (["--workers", "0"], "workers must be positive"),
        (["--file_system_poll_wait_seconds", "0"], "poll_interval_s must be positive"),
        (["--model_name", ""], "model_name must not be empty"),
        (["--version_labels", "stable"], r"expected label=version\[,label=version\], got 'stable'"),
    ],
)
def test_bad_flags_are_usage_errors_naming_the_setting(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(flags)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_server_config_checks_itself():
    with pytest.raises(ValueError, match="ServerConfig: max_k must be positive; workers must be positive"):
        config.ServerConfig(max_k=0, workers=0)
    with pytest.raises(ValueError, match="version_labels must map labels to versions >= 0"):
        config.ServerConfig(version_labels={"stable": -1})
    assert config.ServerConfig(grpc_port=0, rest_port=0).rest_port == 0  # both free ports (tests)
