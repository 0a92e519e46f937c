"""Pipeline constants: names, module paths and the typed configs every runner starts from.

As in the TFX template, model code is referenced by dotted path, so the pipeline never imports TensorFlow
model code; runners turn these constants into component arguments. This module imports nothing heavy (no
TensorFlow, Beam or TFX): command lines build and check a `PipelineConfig` before any of those load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from components import interactions
from components.drift_gate_config import DriftThresholds
from components.example_gen_config import ExampleGenConfig
from serving.config import MODEL_NAME, SERVING_DIRNAME
from trainer.config import TrainerConfig, parse_json_object

PIPELINE_NAME = "tailtower"
# MODEL_NAME (imported above from serving.config) names the pushed model's folder in run_paths.

# User code, referenced by dotted path (resolved on the workers, where the package is installed).
PREPROCESSING_FN = "trainer.preprocessing.preprocessing_fn"
RUN_FN = "trainer.train.run_fn"
METRICS_MODULE = "evaluation.tfma_metrics"

# The curated raw schema of the interaction examples.
SCHEMA_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schema", "schema.pbtxt")

# Layout of a run folder (`make demo` writes ./demo-run/).
PIPELINE_ROOT_DIRNAME = "pipeline-root"
METADATA_FILENAME = "metadata.sqlite"
# The frozen-BERT encoding cache (trainer/encoding_cache.py), beside the pipeline root: it outlives runs, and
# inside scripts/env's root the run folder (in the checkout) is on the host.
ENCODING_CACHE_DIRNAME = "encoding-cache"

# Beam DirectRunner worker processes (local runs).
DEFAULT_DIRECT_NUM_WORKERS = 1


def run_paths(output_dir: str) -> dict[str, str]:
    """Pipeline root, SQLite ML Metadata and the serving model base path inside one run folder."""
    return {
        "pipeline_root": os.path.join(output_dir, PIPELINE_ROOT_DIRNAME),
        "metadata_path": os.path.join(output_dir, METADATA_FILENAME),
        "serving_model_dir": os.path.join(output_dir, SERVING_DIRNAME, MODEL_NAME),
        "encoding_cache_dir": os.path.join(output_dir, ENCODING_CACHE_DIRNAME),
    }


@dataclass(frozen=True)
class EvalGateConfig:
    """What the Evaluator requires before the Pusher may push (TFMA thresholds)."""

    # K of the gating Recall@K, APLT@K and TailCoverage@K: the trained model's top-K list length.
    top_k: int = TrainerConfig.top_k
    min_auc: float = 0.6
    min_tail_coverage: float = 0.05
    # No regression beyond this against the latest blessed model (absolute change in AUC / Recall@K).
    regression_tolerance: float = 0.02

    def __post_init__(self) -> None:
        checks = {
            "top_k must be positive": self.top_k > 0,
            "min_auc must be in [0, 1]": 0.0 <= self.min_auc <= 1.0,
            "min_tail_coverage must be in [0, 1]": 0.0 <= self.min_tail_coverage <= 1.0,
            "regression_tolerance must be >= 0": self.regression_tolerance >= 0.0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"EvalGateConfig: {'; '.join(failed)} (got {self})")


# The GPUs Vertex attaches to n1 machines; others need their own machine family (L4: g2, A100: a2, H100: a3).
N1_ACCELERATORS = ("NVIDIA_TESLA_T4", "NVIDIA_TESLA_P4", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_V100")


@dataclass(frozen=True)
class VertexTraining:
    """Runs the Trainer as a Vertex AI custom job on its own machine (TFX's google_cloud_ai_platform Trainer
    executor), e.g. a GPU for fine-tuning BERT, while the Beam components run elsewhere (Dataflow)."""

    project: str
    region: str
    image: str  # the container image the job runs (a GPU job: one whose TensorFlow sees CUDA, see Dockerfile)
    machine_type: str = "n1-standard-8"
    accelerator_type: str = ""  # e.g. NVIDIA_TESLA_T4; "" = CPU only
    accelerator_count: int = 0

    def __post_init__(self) -> None:
        if not (self.project and self.region and self.image and self.machine_type):
            raise ValueError(f"VertexTraining: project, region, image and machine_type must be set: {self}")
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise ValueError(
                f"VertexTraining: give accelerator_type and a positive accelerator_count together, got {self}"
            )
        if self.machine_type.startswith("n1-") and self.accelerator_type not in ("", *N1_ACCELERATORS):
            raise ValueError(
                f"VertexTraining: {self.accelerator_type} does not attach to {self.machine_type} "
                f"(n1 machines take {', '.join(N1_ACCELERATORS)}): "
                "set a machine type of its family, e.g. g2-standard-8 for L4"
            )

    def job_spec(self) -> dict:
        """The CustomJob's job_spec: one worker on `machine_type` running `image`."""
        machine = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine["accelerator_type"] = self.accelerator_type
            machine["accelerator_count"] = self.accelerator_count
        pool = {"machine_spec": machine, "replica_count": 1, "container_spec": {"image_uri": self.image}}
        return {"worker_pool_specs": [pool]}


@dataclass
class PipelineConfig:
    """Everything `pipeline.pipeline.create_pipeline` needs; runners fill it from flags. Checked on
    construction, so that a bad setting fails before any component runs."""

    data_dir: str
    output_dir: str
    # The recommendation service's logs folder (its --output/logs): clicks, carts and purchases become train
    # positives, displayed-not-taken items real negatives (components/log_examples.py). "" = none.
    logs_dir: str = ""
    # Its `bert` is the BERT name or folder; the runner resolves it, Transform and Trainer get the folder.
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    example_gen: ExampleGenConfig = field(default_factory=ExampleGenConfig)
    # None: the default gate, at K = trainer.top_k.
    eval_gate: EvalGateConfig | None = None
    # Past these the run stops before training (components/drift_gate.py); <= 0 turns a check off.
    drift_thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    beam_pipeline_args: list[str] = field(
        default_factory=lambda: [f"--direct_num_workers={DEFAULT_DIRECT_NUM_WORKERS}"]
    )
    # Off by default: ExampleGen reads files whose changes TFX's cache cannot see.
    enable_cache: bool = False
    # Folder (or gs:// path) of the frozen-BERT encoding cache shared across runs; "" = run_paths' default,
    # <output_dir>/encoding-cache. Point several runs (the harness's protocols, Kubeflow runs) at one.
    encoding_cache: str = ""
    # The splits the model learns from: Transform analyzes them (vocabularies, popularity), the Trainer fits
    # on them. The offline harness adds "eval", whose items the harness's own test split already excludes.
    train_splits: list[str] = field(default_factory=lambda: [interactions.TRAIN])
    # None: the Trainer runs where the orchestrator runs it; set (Kubeflow / Vertex): a Vertex AI custom job.
    vertex_training: VertexTraining | None = None

    def __post_init__(self) -> None:
        if self.eval_gate is None and isinstance(self.trainer, TrainerConfig):
            self.eval_gate = EvalGateConfig(top_k=self.trainer.top_k)
        for name, kind in [
            ("trainer", TrainerConfig),
            ("example_gen", ExampleGenConfig),
            ("eval_gate", EvalGateConfig),
        ]:
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise TypeError(f"PipelineConfig.{name} must be a {kind.__name__}, got {value!r}")
        if not self.data_dir or not self.output_dir:
            raise ValueError(f"PipelineConfig: data_dir and output_dir must be set, got {self}")
        unknown = sorted(set(self.train_splits) - set(interactions.SPLITS))
        if not self.train_splits or unknown:
            raise ValueError(
                f"PipelineConfig.train_splits must be a non-empty list of {interactions.SPLITS}, "
                f"got {self.train_splits}"
            )
        check_top_k(self)


def check_top_k(config: PipelineConfig) -> None:
    """The gate's K must be the length of the lists the model serves the Evaluator: checked here, before
    anything runs, since the Evaluator's metrics (evaluation/tfma_metrics.py) refuse a served list shorter
    than K only once the model is trained, and score only the first K items of a longer one."""
    trainer_k, gate_k = config.trainer.top_k, config.eval_gate.top_k
    if trainer_k != gate_k:
        raise ValueError(
            f"TrainerConfig.top_k ({trainer_k}, the length of serving_default's top_k_* lists) must equal "
            f"EvalGateConfig.top_k ({gate_k}, the K of the gating Recall@K, APLT@K and TailCoverage@K)"
        )


def trainer_config(
    trainer_json: str, bert: str | None = None, default_bert: str | None = None
) -> TrainerConfig:
    """A runner's `--trainer-config` JSON and `--bert` as one TrainerConfig.

    `--bert` and a "bert" key of the JSON are the same setting: either may be given, both only if equal.
    `default_bert` replaces TrainerConfig's default when neither is given (the container image's folder).

    Raises:
      ValueError: naming the bad key or value (unknown keys: with the known ones), or the bert conflict.
    """
    overrides = parse_json_object(trainer_json, "--trainer-config")
    if bert is not None:
        if overrides.get("bert", bert) != bert:
            raise ValueError(f"BERT flag {bert!r} and --trainer-config's bert {overrides['bert']!r} differ")
        overrides["bert"] = bert
    if default_bert is not None:
        overrides.setdefault("bert", default_bert)
    try:
        return TrainerConfig.from_custom_config(overrides)
    except ValueError as e:
        raise ValueError(f"--trainer-config {trainer_json}: {e}") from e
