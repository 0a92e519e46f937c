"""`make bench-refresh DATA=dir [NEW_ITEMS=1000]`: time from new items landing to their being recommended by a
running server, and how well they are recommended, with the catalog refresh (pipeline/refresh.py).

1. Holds out DATA's NEW_ITEMS newest items (latest first positive): OUT/before/ is DATA without them and
   their interactions (as if they had not landed yet), OUT/after/ has the whole catalog.
2. Trains the pipeline on before/ into OUT/run (reused when it already holds a pushed model).
3. Starts the model server on OUT/run/serving (loopback, free ports) and times `python -m pipeline.refresh
   --data OUT/after` (a fresh process, as `make refresh` runs it) plus the wait until the server answers a
   request for a new item with the new version.
4. Recall@10 of the refreshed version for users whose last positive in DATA is a held-out (new, cold) item,
   history = their earlier positives, and the same for users whose last positive is a kept item (warm).
5. Byte-identity: the refreshed model's text vectors (kept items from the encoding cache, new ones encoded by
   the refresh) against every item encoded afresh without the cache.
Prints the table and writes OUT/bench-refresh.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from evaluation import data as eval_data
from trainer import features
from trainer.config import TrainerConfig

K = TrainerConfig.top_k
WAIT_S = 300  # for the server to hot-swap to the refreshed version
INTERACTIONS_FILE, ITEMS_FILE = eval_data.data_files.LAYOUTS["tsv"]  # the normalized layout
TSV_HEADER = (features.USER_ID, features.ITEM_ID, "rating", "time")


def hold_out(data_dir: str, out: str, new_items: int) -> set[str]:
    """Writes out/before (DATA without its `new_items` newest items — latest first positive — and their
    interactions, as if they had not landed yet) and out/after (DATA's catalog, the same interactions);
    returns the held-out ids."""
    dataset = eval_data.load_dataset(data_dir)
    first_seen: dict[str, tuple[int, int]] = {}
    for rows in dataset.positives.values():
        for p in rows:
            first_seen[p.item_id] = min(first_seen.get(p.item_id, (p.time, p.line)), (p.time, p.line))
    held = set(sorted(first_seen, key=first_seen.get)[-new_items:])
    files = eval_data.data_files.find_dataset_files(data_dir)
    before = [item for item in dataset.items if item.item_id not in held]
    for name, items in [("before", before), ("after", dataset.items)]:
        folder = os.path.join(out, name)
        os.makedirs(folder, exist_ok=True)
        _write_interactions(files.interactions, os.path.join(folder, INTERACTIONS_FILE), held)
        with open(os.path.join(folder, ITEMS_FILE), "w", encoding="utf-8") as f:
            rows = ({**item._asdict(), features.CATEGORIES: list(item.categories)} for item in items)
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return held


def _write_interactions(source: str, dest: str, held: set[str]) -> None:
    """DATA's valid interactions without those of `held` items, as interactions.tsv."""
    with open(dest, "w", encoding="utf-8") as f:
        f.write("\t".join(TSV_HEADER) + "\n")
        for row in eval_data.data_files.read_raw_rows(source):
            parsed = eval_data.data_files.parse_interaction(row)
            if isinstance(parsed, eval_data.data_files.Rejected) or parsed.item_id in held:
                continue
            rating = "" if parsed.rating is None else str(parsed.rating)
            f.write(f"{parsed.user_id}\t{parsed.item_id}\t{rating}\t{parsed.time}\n")


def last_item_users(data_dir: str, held: set[str]) -> dict[str, list[tuple[list[str], str]]]:
    """{"cold": [(history, target)], "warm": [...]}: each user's last positive, held-out or not."""
    cases: dict[str, list[tuple[list[str], str]]] = {"cold": [], "warm": []}
    for rows in eval_data.load_dataset(data_dir).positives.values():
        if len(rows) < 2:
            continue
        history = [p.item_id for p in rows[:-1]]
        cases["cold" if rows[-1].item_id in held else "warm"].append((history, rows[-1].item_id))
    return cases


def train(before: str, run_dir: str) -> None:
    """The pipeline on `before` into `run_dir`, unless a model is already pushed there."""
    from components import catalog_refresh
    from pipeline import configs, local_runner

    serving_dir = configs.run_paths(run_dir)["serving_model_dir"]
    versions = sorted(catalog_refresh.versions(serving_dir))
    if versions:  # the trained version; refreshed ones from an earlier bench run are dropped
        for version in versions[1:]:
            shutil.rmtree(os.path.join(serving_dir, str(version)))
        print(f"reusing the trained model {versions[0]} in {run_dir}", flush=True)
        return
    local_runner.run(configs.PipelineConfig(data_dir=os.path.abspath(before), output_dir=run_dir))


def timed_refresh(after: str, run_dir: str, new_item: str) -> dict[str, float]:
    """Seconds of the refresh process, and from its start until the server returns `new_item`."""
    from pipeline import configs
    from serving import bench
    from serving.config import MODEL_NAME
    from serving.rest_client import RestClient

    serving_dir = configs.run_paths(run_dir)["serving_model_dir"]
    log = os.path.join(run_dir, "bench-server.log")
    process, rest_port, _ = bench.start_server(serving_dir, MODEL_NAME, log)
    try:
        client = RestClient(f"http://127.0.0.1:{rest_port}", MODEL_NAME)
        start = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "pipeline.refresh", "--data", after, "--output", run_dir], check=True
        )
        refreshed = time.monotonic() - start
        deadline = time.monotonic() + WAIT_S
        while new_item not in _recommended(client, new_item):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not serve the refreshed version within {WAIT_S} s")
            time.sleep(0.2)
        return {
            "refresh process": refreshed,
            "until the server recommends a new item": time.monotonic() - start,
        }
    finally:
        process.terminate()
        process.wait(timeout=30)


def _recommended(client, item: str) -> list[str]:
    """What the server returns for a new user when only `item` is allowed (knobs off, latest version)."""
    from serving.recommend_request import knob_names, with_knobs_off

    knobs = with_knobs_off({}, knob_names(client.scalar_inputs(features.RECOMMEND_SIGNATURE)))
    return client.recommend([""], [[]], 1, allowed_ids=[[item]], **knobs).item_ids()[0]


def recall(model_dir: str, cases: list[tuple[list[str], str]]) -> float:
    from serving.local_client import LocalClient
    from trainer.refresh import recall_at_k

    client = LocalClient(model_dir)
    try:
        return recall_at_k(client, [h for h, _ in cases], [t for _, t in cases], K)
    finally:
        client.close()


def byte_identical(model_dir: str, after: str) -> tuple[bool, float]:
    """(equal, max |difference|) of the model's cached text vectors and an uncached encoding."""
    from evaluation.served_model import ServedModel
    from trainer import bert, refresh, refresh_kit
    from trainer import train as train_lib

    kit = refresh_kit.read_kit(model_dir)
    catalog, _ = refresh.transformed_catalog(refresh.catalog_examples(after)[0], kit)
    encoder = bert.BertTextEncoder(bert.load_bert(kit.config.bert))
    fresh = train_lib.encode_catalog(catalog, encoder, cache_dir="")
    ids = tuple(item.decode() for item in catalog[features.ITEM_ID].tolist())
    served = ServedModel(model_dir).text_vectors(ids)
    return bool(np.array_equal(served, fresh)), float(np.abs(served - fresh).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True)
    parser.add_argument("--new-items", type=int, default=1000)
    parser.add_argument("--out", default="bench-refresh")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    held = hold_out(args.data, out, args.new_items)
    run_dir = os.path.join(out, "run")
    train(os.path.join(out, "before"), run_dir)
    seconds = timed_refresh(os.path.join(out, "after"), run_dir, sorted(held)[0])
    from components.catalog_refresh import latest_version_dir
    from pipeline import configs

    model_dir = latest_version_dir(configs.run_paths(run_dir)["serving_model_dir"])
    cases = last_item_users(args.data, held)
    rows = [f"| {step} | {value:.1f} s |" for step, value in seconds.items()]
    for name, users in cases.items():
        rows.append(
            f"| Recall@{K}, users whose last item is {name} ({len(users)}) | {recall(model_dir, users):.4f} |"
        )
    equal, diff = byte_identical(model_dir, os.path.join(out, "after"))
    rows.append(
        f"| text vectors byte-identical to an uncached encoding | {equal} (max difference {diff:.2g}) |"
    )
    lines = [
        f"{len(held)} new items in {os.path.basename(os.path.normpath(args.data))}",
        "",
        "| | |",
        "|---|---|",
        *rows,
    ]
    with open(os.path.join(out, "bench-refresh.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
