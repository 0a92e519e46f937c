"""ServiceConfig: defaults owned by the dataclass, bad values refused naming the field / flag."""

import pytest

from serving.service_config import IN_PROCESS, ConfigError, ServiceConfig, parse_args


def test_defaults_and_derived_paths():
    config = parse_args([])
    assert config == ServiceConfig()
    assert (config.host, config.port, config.model_endpoint) == ("127.0.0.1", 8080, "127.0.0.1:8500")
    assert (config.model_name, config.output) == ("tailtower", "demo-run")
    assert (config.service_dir, config.logs_dir) == ("demo-run/service", "demo-run/logs")
    assert config.versions_path == "demo-run/serving/tailtower"
    assert ServiceConfig(model_base_path="/m").versions_path == "/m"


def test_in_process_is_a_model_endpoint():
    assert parse_args(["--model_endpoint", "in-process"]).model_endpoint == IN_PROCESS == "in-process"


def test_flags_set_fields():
    config = parse_args(["--port", "9000", "--max_k", "50", "--output", "run", "--history_ttl_s", "60"])
    assert (config.port, config.max_k, config.output, config.history_ttl_s) == (9000, 50, "run", 60.0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_k", "0"], "argument --max_k: must be >= 1 (got 0)"),
        (["--port", "70000"], "argument --port: must be a port number (0-65535) (got 70000)"),
        (
            ["--model_endpoint", "localhost"],
            "argument --model_endpoint: must be host:port or in-process (got 'localhost')",
        ),
        (["--history_ttl_s", "-1"], "argument --history_ttl_s: must be > 0 (got -1.0)"),
        (["--max_events", "ten"], "argument --max_events: invalid int value: 'ten'"),
    ],
)
def test_bad_flags_fail_at_parse_time_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_field_names_the_field():
    with pytest.raises(ConfigError, match=r"^max_history: must be >= 0$"):
        ServiceConfig(max_history=-1)
