"""TF Serving's REST predict JSON ↔ numpy, following tensorflow_serving/util/json_tensor.cc.

Request: {"signature_name": str?, "instances": [...]} (row format: one entry per example, batched along a
new first axis) or {"inputs": ...} (columnar: one value per named input, shapes as given). Values are
converted to the signature's dtype: DT_STRING takes JSON strings or {"b64": "..."}; integers take JSON
integers; floats take any number. Response: {"predictions": [...]} for row requests (a list of values when the
signature has one output, else a list of {name: value} objects), {"outputs": ...} for columnar ones. Strings
come back as plain JSON strings, or {"b64": ...} for outputs whose name ends in "_bytes", as TF Serving does.

Unlike TF Serving, extra keys in a columnar "inputs" object are an error rather than ignored (a misspelt knob
would otherwise be silently dropped).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import numpy as np
import orjson
import tensorflow as tf

from serving.errors import invalid_argument
from serving.servable import InputInfo

ROW, COLUMNAR = "row", "columnar"
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"


# ------------------------------------------------------------------------------------ request
def parse_request(body: bytes) -> dict:
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise invalid_argument(f"JSON Parse error: {e}") from e
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_dump(doc)} Is not object")
    return doc


def signature_name(doc: Mapping) -> str:
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(
            f"JSON Value: {_dump(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def request_tensors(doc: Mapping, infos: Mapping[str, InputInfo]) -> tuple[dict[str, np.ndarray], str]:
    """The input arrays of a predict request and its format (ROW or COLUMNAR)."""
    if not infos:
        raise invalid_argument("Failed to get input map for signature")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    if has_instances and has_inputs:
        raise invalid_argument(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if has_instances:
        return _from_instances(doc["instances"], infos), ROW
    if has_inputs:
        return _from_inputs(doc["inputs"], infos), COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _from_instances(instances, infos: Mapping[str, InputInfo]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    if not isinstance(instances[0], dict) and len(infos) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    named = _is_named(instances[0])
    columns: dict[str, list[np.ndarray]] = {name: [] for name in infos}
    for index, item in enumerate(instances):
        if named != _is_named(item):
            kind = "object but got list" if named else "value/list but got object"
            raise invalid_argument(f"Expecting {kind} at item {index} of input list")
        values = item if named else {next(iter(infos)): item}
        _add_instance(index, values, infos, columns)
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _add_instance(index: int, values: Mapping, infos: Mapping[str, InputInfo], columns: dict) -> None:
    for name, value in values.items():
        info = infos.get(name)
        if info is None:
            raise invalid_argument(
                f"Failed to process element: {index} key: {name} of 'instances' list. "
                f"Error: JSON object: does not have named input: {name}"
            )
        array = json_to_array(value, info)
        if columns[name] and columns[name][0].shape != array.shape:
            raise invalid_argument(
                f"Failed to process element: {index} key: {name} of 'instances' list. "
                f"Error: Expecting shape {list(columns[name][0].shape)} but got: "
                f"{list(array.shape)}"
            )
        columns[name].append(array)
    if set(values) != set(infos):
        raise invalid_argument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{_dump(values)} must only have keys: {','.join(sorted(infos))}"
        )


def _from_inputs(inputs, infos: Mapping[str, InputInfo]) -> dict[str, np.ndarray]:
    if not _is_named(inputs):
        if len(infos) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        info = next(iter(infos.values()))
        return {info.name: json_to_array(inputs, info)}
    extra = set(inputs) - set(infos)
    if extra:
        raise invalid_argument(
            f"'inputs' has keys the signature does not: {{{','.join(sorted(extra))}}}. "
            f"Inputs expected to be in the set {{{','.join(sorted(infos))}}}."
        )
    tensors = {}
    for name, info in infos.items():
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_to_array(inputs[name], info)
    return tensors


# ------------------------------------------------------------------------------------ values
def json_to_array(value, info: InputInfo) -> np.ndarray:
    """A (nested) JSON value → an array of `info.dtype`; the shape comes from the first element per level."""
    shape = _dense_shape(value)
    flat: list = []
    _fill(value, 0, shape, info.dtype, flat)
    if info.dtype == tf.string:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    return np.array(flat, dtype=info.dtype.as_numpy_dtype).reshape(shape)


def _dense_shape(value) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value, level: int, shape: list[int], dtype: tf.DType, out: list) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(
                f"JSON Value: {_dump(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {len(shape)}"
            )
        out.append(_leaf(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def _leaf(value, dtype: tf.DType):
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode()
        if _is_b64(value):
            return _decode_b64(value)
    elif dtype.is_bool:
        if isinstance(value, bool):
            return value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        pass  # JSON true/false, strings and objects are not numbers
    elif dtype.is_integer:
        if isinstance(value, int) and dtype.min <= value <= dtype.max:
            return value
    elif dtype.is_floating:
        if abs(value) <= dtype.max or value != value:  # NaN passes, as in TF Serving
            return value
        raise invalid_argument(
            f"Cannot convert JSON value: {_dump(value)} to {dtype.name} without loss of precision."
        )
    raise invalid_argument(
        f"JSON Value: {_dump(value)} Type: {_json_type(value)} is not of expected type: {dtype.name}"
    )


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _is_named(value) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _decode_b64(value: dict) -> bytes:
    try:
        return base64.b64decode(value[_B64], validate=True)
    except (binascii.Error, ValueError) as e:
        raise invalid_argument("Unable to base64 decode") from e


def _json_type(value) -> str:
    for kind, name in (
        (bool, "True" if value is True else "False"),
        (dict, "Object"),
        (list, "Array"),
        (str, "String"),
        (int | float, "Number"),
    ):
        if isinstance(value, kind):
            return name
    return "Null"


def _dump(value) -> str:
    text = orjson.dumps(value, default=str).decode()
    return text if len(text) <= 200 else text[:200] + "..."


# ------------------------------------------------------------------------------------ response
def response_body(outputs: Mapping[str, np.ndarray], fmt: str) -> bytes:
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if fmt == ROW:
        return _dumps({"predictions": _rows(outputs, names)})
    if len(names) == 1:
        return _dumps({"outputs": _json_value(names[0], outputs[names[0]])})
    return _dumps({"outputs": {name: _json_value(name, outputs[name]) for name in names}})


def _rows(outputs: Mapping[str, np.ndarray], names: list[str]) -> list:
    batch = None
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if array.shape[0] < 1 or batch not in (None, array.shape[0]):
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    columns = {name: _json_value(name, outputs[name]) for name in names}
    if len(names) == 1:
        return list(columns[names[0]])
    return [{name: columns[name][i] for name in names} for i in range(batch)]


def _json_value(name: str, array: np.ndarray):
    """An output array as orjson serializes it: numeric arrays as they are, strings as nested lists."""
    if array.dtype.kind not in "OS":
        return array if array.ndim else array[()]
    encode = _b64_object if name.endswith(_BYTES_SUFFIX) else _utf8
    if array.ndim == 0:
        return encode(array.item())
    strings = np.empty(array.size, dtype=object)
    strings[:] = [encode(item) for item in array.ravel()]
    return strings.reshape(array.shape).tolist()


def _utf8(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _b64_object(value: bytes) -> dict:
    return {_B64: base64.b64encode(value).decode("ascii")}


def _dumps(doc) -> bytes:
    # OPT_SERIALIZE_NUMPY writes float32 with its shortest round-trip repr, as TF Serving does.
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_fallback)


def _fallback(value):
    if isinstance(value, np.ndarray | np.generic):  # dtypes orjson lacks (float16, non-contiguous views)
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")
