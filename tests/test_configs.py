"""Configuration is checked when the command line is parsed, before TensorFlow, Beam or TFX load.

Each entry point runs in a fresh interpreter (as `python -m <module> ...` would): the bad setting must be a
usage error naming the key (and listing the known ones), and none of the heavy packages may have been
imported by then.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from pipeline import configs
from trainer.config import DEFAULT_BERT, TrainerConfig

HEAVY = ("tensorflow", "apache_beam", "tfx", "tensorflow_transform")
KNOWN_TRAINER_KEYS = str(sorted(f for f in TrainerConfig.__dataclass_fields__))

# Runs `python -m <module> <args>` in this interpreter, then prints the exit code and the heavy packages
# imported by then as stdout's last line (the module's own output comes before it, or goes to stderr).
_RUN_MODULE = textwrap.dedent(
    """
    import json, runpy, sys
    module, args, heavy = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code
    print(json.dumps({"code": code, "heavy": sorted({m.split(".")[0] for m in sys.modules} & heavy)}))
    """
)


def _run_module(module: str, *args: str) -> tuple[dict, str]:
    """({"code": exit code, "heavy": heavy packages imported}, stderr) of `python -m module args`."""
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_MODULE, module, json.dumps(args), json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_plain_configs_import_nothing_heavy():
    code = (
        "import sys, pipeline.configs, serving.config, components.example_gen_config, trainer.config; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


BAD_TRAINER_KEY = '{"epoch": 4}'
TRAINER_KEY_ERROR = f"Unknown trainer custom_config keys ['epoch']; known keys: {KNOWN_TRAINER_KEYS}"


@pytest.mark.parametrize(
    "module, args, message",
    [
        ("pipeline.demo", ["--trainer-config", BAD_TRAINER_KEY], TRAINER_KEY_ERROR),
        (
            "pipeline.local_runner",
            ["--data", "d", "--output", "o", "--trainer-config", BAD_TRAINER_KEY],
            TRAINER_KEY_ERROR,
        ),
        ("pipeline.kubeflow_runner", ["--trainer-config", BAD_TRAINER_KEY], TRAINER_KEY_ERROR),
        ("pipeline.demo", ["--trainer-config", '{"epochs": 0}'], "TrainerConfig.epochs must be positive"),
        (
            "pipeline.local_runner",
            ["--data", "d", "--output", "o", "--bert", "/a", "--trainer-config", '{"bert": "/b"}'],
            "BERT flag '/a' and --trainer-config's bert '/b' differ",
        ),
        (
            "evaluation.harness",
            ["--data", "d", "--out", "o", "--train-variants", '[{"epochs": 1}, {"epoch": 1}]'],
            f'--train-variants[1] {{"epoch": 1}}: {TRAINER_KEY_ERROR}',
        ),
        (
            "evaluation.harness",
            ["--data", "d", "--out", "o", "--sweep", "mmr_lamda=0.5"],
            "unknown knob 'mmr_lamda' in 'mmr_lamda=0.5'; known knobs: "
            "['mmr_lambda', 'xquad_lambda', 'new_item_boost']",
        ),
        ("serving.server", ["--max_k", "0"], "ServerConfig: max_k must be positive"),
    ],
)
def test_a_bad_setting_fails_before_anything_heavy_loads(module, args, message):
    result, stderr = _run_module(module, *args)
    assert result == {"code": 2, "heavy": []}, stderr
    assert message in stderr


def test_trainer_config_merges_the_bert_flag_and_json():
    assert configs.trainer_config("{}") == TrainerConfig()
    assert configs.trainer_config('{"epochs": 2}', "/m") == TrainerConfig(bert="/m", epochs=2)
    assert configs.trainer_config('{"bert": "/m"}', "/m") == TrainerConfig(bert="/m")
    assert configs.trainer_config("{}", default_bert="/image") == TrainerConfig(bert="/image")
    assert configs.trainer_config('{"bert": "/m"}', default_bert="/image").bert == "/m"
    assert TrainerConfig().bert == DEFAULT_BERT
    with pytest.raises(ValueError, match="is not valid JSON"):
        configs.trainer_config("{epochs: 2}")
    with pytest.raises(ValueError, match="--trainer-config must be a JSON object"):
        configs.trainer_config("[]")
    with pytest.raises(ValueError, match="TrainerConfig.bert must be a string, got 3"):
        configs.trainer_config('{"bert": 3}')
