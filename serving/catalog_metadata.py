"""Item metadata (title, new and tail flags, brand, categories) of the model version that answered, from the
version's own folder.

  <model_base_path>/<version>/assets.extra/catalog.jsonl   one JSON object per item, written by the Trainer's
  export (`trainer.export.write_catalog_metadata`; fields `trainer.features.CATALOG_METADATA_FIELDS`):
      {"item_id": "i003", "title": "…", "brand": "…", "categories": ["…"], "is_tail": true, "is_new": false}

TF Serving ignores assets.extra/, so the file travels with the model and always matches it. A version without
the file (exported before the Trainer wrote it) gets title "", is_new and is_tail false, no brand and no
categories for every item.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from trainer import features

logger = logging.getLogger(__name__)

CATALOG_FILE = os.path.join(features.ASSETS_EXTRA_DIR, features.CATALOG_METADATA_FILE)


@dataclass(frozen=True)
class ItemInfo:
    title: str = ""
    is_new: bool = False
    is_tail: bool = False
    brand: str = ""
    categories: tuple[str, ...] = ()


UNKNOWN = ItemInfo()


class CatalogMetadata:
    """item id → ItemInfo per model version, each version's file read once, the `keep_versions` most recently
    used kept (a rollback to an older version evicts whichever was used least recently, never the one asked
    for); thread-safe."""

    def __init__(self, model_base_path: str, keep_versions: int = 2):
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be >= 1, got {keep_versions}")
        self.model_base_path = model_base_path
        self._keep = keep_versions
        self._versions: OrderedDict[int, dict[str, ItemInfo]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def items(self, version: int) -> dict[str, ItemInfo]:
        with self._lock:
            items = self._versions.get(version)
            if items is None:
                items = self._versions[version] = self._load(version)
            self._versions.move_to_end(version)
            while len(self._versions) > self._keep:
                self._versions.popitem(last=False)
            return items

    def lookup(self, version: int, item_id: str) -> ItemInfo:
        return self.items(version).get(item_id, UNKNOWN)

    def _load(self, version: int) -> dict[str, ItemInfo]:
        items = read_items(os.path.join(self.model_base_path, str(version)))
        logger.info("model version %d: metadata of %d items", version, len(items))
        return items


def read_items(model_dir: str) -> dict[str, ItemInfo]:
    """item id → ItemInfo from one SavedModel folder's catalog metadata ({} when it has none)."""
    path = os.path.join(model_dir, CATALOG_FILE)
    if not os.path.exists(path):
        logger.info("%s has no %s: titles empty, is_new false", model_dir, CATALOG_FILE)
        return {}
    items = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                doc = json.loads(line)
                items[doc[features.ITEM_ID]] = ItemInfo(
                    doc.get(features.TITLE, ""),
                    bool(doc.get(features.IS_NEW)),
                    bool(doc.get(features.IS_TAIL)),
                    doc.get(features.BRAND) or "",
                    tuple(doc.get(features.CATEGORIES) or ()),
                )
    return items
