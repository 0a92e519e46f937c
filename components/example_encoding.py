"""tf.Example encoding of catalog items and interaction examples (formats in trainer/features.py)."""

from __future__ import annotations

import tensorflow as tf

from components.data_files import Item
from components.interactions import ExampleStub
from trainer import features


def _bytes(values: list[str] | tuple[str, ...]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode("utf-8") for v in values]))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))


def _item_features(item: Item) -> dict[str, tf.train.Feature]:
    return {
        features.ITEM_ID: _bytes([item.item_id]),
        features.TITLE: _bytes([item.title]),
        features.TEXT: _bytes([item.text]),
        features.BRAND: _bytes([item.brand]),
        features.CATEGORIES: _bytes(item.categories),
        features.PRICE: _float(item.price),
    }


def item_example(item: Item) -> tf.train.Example:
    """A catalog example: the item features only."""
    return tf.train.Example(features=tf.train.Features(feature=_item_features(item)))


def interaction_example(
    stub: ExampleStub, item: tf.train.Example, with_text: bool = False
) -> tf.train.Example:
    """An interaction example: user, history, timestamp, label (and position), plus the item's
    `features.EXAMPLE_ITEM_FEATURES` — and its title and text only `with_text` (the eval split: see
    `features.EXAMPLE_ITEM_FEATURES`); training reads those once per catalog item.

    `item` is `item_example(...)` of `stub.item_id`, built once per item; its features are copied (fast C++
    copies) into each of its examples.
    """
    if item.features.feature[features.ITEM_ID].bytes_list.value != [stub.item_id.encode("utf-8")]:
        raise ValueError(f"example for item {stub.item_id!r} joined with another item's features")
    example = tf.train.Example()
    feature = example.features.feature
    for key in features.ITEM_FEATURES if with_text else features.EXAMPLE_ITEM_FEATURES:
        feature[key].CopyFrom(item.features.feature[key])
    feature[features.USER_ID].bytes_list.value.append(stub.user_id.encode("utf-8"))
    feature[features.HISTORY].bytes_list.value.extend(h.encode("utf-8") for h in stub.history)
    feature[features.TIMESTAMP].int64_list.value.append(stub.timestamp)
    feature[features.LABEL].float_list.value.append(stub.label)
    if stub.position >= 0:  # a logged display (components/log_examples.py); absent otherwise
        feature[features.SLOT].int64_list.value.append(stub.position)
    return example
