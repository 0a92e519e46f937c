"""The service's per-version catalog metadata cache: each version's file read once, the most recently used
versions kept, a rollback to an evicted version served (not a KeyError)."""

import json
import os

from serving.catalog_metadata import CATALOG_FILE, CatalogMetadata, ItemInfo
from trainer import features


def write_version(base: str, version: int) -> None:
    path = os.path.join(base, str(version), CATALOG_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as f:
        doc = {features.ITEM_ID: "i1", features.TITLE: f"v{version}", features.IS_NEW: version % 2 == 0}
        f.write(json.dumps(doc) + "\n")
        doc = {
            features.ITEM_ID: "i2",
            features.TITLE: "pen",
            features.BRAND: "acme",
            features.CATEGORIES: ["office", "pens"],
            features.IS_TAIL: True,
        }
        f.write(json.dumps(doc) + "\n")


def test_versions_are_read_once_and_the_least_recently_used_is_evicted(tmp_path, monkeypatch):
    base = str(tmp_path)
    for version in (1, 2, 3):
        write_version(base, version)
    metadata = CatalogMetadata(base, keep_versions=2)
    reads = []
    load = metadata._load
    monkeypatch.setattr(metadata, "_load", lambda version: reads.append(version) or load(version))

    assert [metadata.lookup(v, "i1") for v in (2, 3)] == [ItemInfo("v2", True), ItemInfo("v3", False)]
    # A rollback to version 1 while 2 and 3 are kept: 1 is served, 2 (least recently used) goes.
    assert metadata.lookup(1, "i1") == ItemInfo("v1", False)
    assert metadata.lookup(3, "i1") == ItemInfo("v3", False)  # still kept: not read again
    assert metadata.lookup(1, "i1") == ItemInfo("v1", False)
    assert metadata.lookup(2, "i1") == ItemInfo("v2", True)  # evicted, read again; 3 goes now
    assert metadata.lookup(1, "i1") == ItemInfo("v1", False)
    assert reads == [2, 3, 1, 2]
    assert list(metadata._versions) == [2, 1]
    assert metadata.lookup(3, "unknown") == ItemInfo()


def test_brand_and_categories_are_read_and_default_to_none(tmp_path):
    write_version(str(tmp_path), 1)
    metadata = CatalogMetadata(str(tmp_path))
    assert metadata.lookup(1, "i2") == ItemInfo("pen", False, True, "acme", ("office", "pens"))
    assert metadata.lookup(1, "i1") == ItemInfo("v1", False, False, "", ())


def test_a_version_without_the_file_has_no_metadata(tmp_path):
    metadata = CatalogMetadata(str(tmp_path), keep_versions=1)
    assert metadata.items(7) == {}
    assert metadata.lookup(7, "i1") == ItemInfo("", False)
