"""Catalog refresh without retraining, as a small TFX pipeline: CatalogRefresh → Pusher.

    make refresh DATA=<dataset folder whose items file is the updated catalog> [OUTPUT=demo-run]
    scripts/env python -m pipeline.refresh --data DATA_DIR --output RUN_DIR

The live model (the latest version under <output>/serving/tailtower/) re-encodes the updated catalog with its
own towers (new items by their text, brand, categories and price; removed items leave index and catalog), is
validated against the current version, and is pushed as a new, higher version, which a running server
hot-swaps. A refresh that fails validation pushes nothing and says why. Orchestrators run
`create_refresh_pipeline` (`make compile-refresh` writes its Kubeflow spec). It shares the run folder's ML
Metadata and encoding cache with the training pipeline.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline import configs
from serving.config import DEFAULT_OUTPUT

REFRESH_PIPELINE_NAME = f"{configs.PIPELINE_NAME}-refresh"


def create_refresh_pipeline(
    data_dir: str,
    output_dir: str,
    encoding_cache: str = "",
    max_recall_drop: float = configs.EvalGateConfig.regression_tolerance,
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
):
    """The refresh pipeline over the run folder `output_dir` (its serving models, root and cache)."""
    from tfx import v1 as tfx

    from components.catalog_refresh import CatalogRefresh

    paths = configs.run_paths(output_dir)
    # Re-encodes the updated catalog with the live model's towers and validates the result.
    refresh = CatalogRefresh(
        data_dir=data_dir,
        serving_model_dir=paths["serving_model_dir"],
        max_recall_drop=max_recall_drop,
        encoding_cache=encoding_cache or paths["encoding_cache_dir"],
    )
    # Pushes it as a new version when the refresh blessed it.
    pusher = tfx.components.Pusher(
        model=refresh.outputs["model"],
        model_blessing=refresh.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=paths["serving_model_dir"])
        ),
    )
    return tfx.dsl.Pipeline(
        pipeline_name=REFRESH_PIPELINE_NAME,
        pipeline_root=paths["pipeline_root"],
        components=[refresh, pusher],
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )


def run(
    data_dir: str, output_dir: str, max_recall_drop: float = configs.EvalGateConfig.regression_tolerance
) -> dict:
    """Runs the refresh pipeline locally; returns the refresh's report (a dict) with the pushed version
    (None when nothing was pushed)."""
    from tfx import v1 as tfx

    from components.catalog_refresh import versions

    paths = configs.run_paths(output_dir)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(paths["metadata_path"])
    before = versions(paths["serving_model_dir"])
    pipeline = create_refresh_pipeline(
        os.path.abspath(data_dir),
        os.path.abspath(output_dir),
        max_recall_drop=max_recall_drop,
        metadata_connection_config=metadata,
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)
    report = _last_report(metadata)
    pushed = sorted(set(versions(paths["serving_model_dir"])) - set(before))
    report["pushed_version"] = pushed[-1] if pushed else None
    return report


def _last_report(metadata_connection_config) -> dict:
    """The newest CatalogRefresh blessing's report (ML Metadata)."""
    import json

    import ml_metadata as mlmd

    from components.catalog_refresh import REPORT

    store = mlmd.MetadataStore(metadata_connection_config)
    blessings = store.get_artifacts_by_type("ModelBlessing")
    refreshed = [a for a in blessings if REPORT in a.custom_properties]
    if not refreshed:
        raise RuntimeError("the refresh pipeline ran but recorded no refresh report")
    newest = max(refreshed, key=lambda a: a.id)
    return json.loads(newest.custom_properties[REPORT].string_value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="dataset folder whose items file is the updated catalog"
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the run folder (its serving/ and metadata)")
    args = parser.parse_args(argv)
    report = run(args.data, args.output)
    pushed = report["pushed_version"]
    print(_describe(dict(report)))
    if pushed is None:
        raise SystemExit(1)


def _describe(report: dict) -> str:
    """The refresh's summary (trainer/refresh.RefreshReport) and what was pushed."""
    from trainer.refresh import RefreshReport

    pushed = report.pop("pushed_version")
    verdict = (
        f"pushed version {pushed} (a running server hot-swaps to it)"
        if pushed is not None
        else (f"pushed nothing: {report['failure'] or 'the Pusher did not push (see the log)'}")
    )
    return f"{RefreshReport(**report).summary()}\n{verdict}"


if __name__ == "__main__":
    main()
