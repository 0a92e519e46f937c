"""A weak-text copy of a dataset folder: each item keeps its id, title and price only (no text, description,
brand, categories, genres or tags), so `make eval` on it shows how much the model owes to rich text.

    scripts/env python -m evaluation.title_only --data ../shared/data/amazon-office --out /tmp/office-title

Items without a title keep nothing to read and are left out (the pipeline would reject them as
empty_text); the interactions file is linked, not copied, and their interactions count as unknown items.
The tsv layout only (interactions.tsv + items.jsonl), which the shared datasets use.
"""

from __future__ import annotations

import argparse
import json
import os

from components import data_files
from trainer import features

LAYOUT = "tsv"


def write_title_only(data_dir: str, out_dir: str) -> tuple[int, int]:
    """Writes OUT/items.jsonl (item_id, title, price), links DATA's interactions file; → (kept, dropped)."""
    if os.path.realpath(out_dir) == os.path.realpath(data_dir):
        raise ValueError(f"title_only: --out {out_dir!r} is the dataset folder itself; choose another")
    files = data_files.find_dataset_files(data_dir)
    if files.layout != LAYOUT:
        raise data_files.DataFileError(f"{data_dir!r} uses the {files.layout} layout; title_only reads "
                                       f"{LAYOUT}")
    interactions_name, items_name = data_files.LAYOUTS[LAYOUT]
    os.makedirs(out_dir, exist_ok=True)
    kept = dropped = 0
    with open(os.path.join(out_dir, items_name), "w", encoding="utf-8") as out:
        for row in data_files.read_raw_rows(files.items):
            item = data_files.parse_item(row)
            if isinstance(item, data_files.Rejected) or not item.title:
                dropped += 1
                continue
            record = {features.ITEM_ID: item.item_id, features.TITLE: item.title}
            if item.price:  # not text: kept
                record[features.PRICE] = item.price
            out.write(json.dumps(record) + "\n")
            kept += 1
    link = os.path.join(out_dir, interactions_name)
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(os.path.abspath(files.interactions), link)
    return kept, dropped


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder: interactions.tsv + items.jsonl")
    p.add_argument("--out", required=True, help="folder for the title-only copy")
    args = p.parse_args(argv)
    kept, dropped = write_title_only(args.data, args.out)
    print(f"{args.out}: {kept} items with their title only, {dropped} left out (no title or rejected)")


if __name__ == "__main__":
    main()
