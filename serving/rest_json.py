"""TF Serving's REST predict JSON ↔ numpy, following tensorflow_serving/util/json_tensor.cc.

Request: {"signature_name": str?, "instances": [...]} (row format: one entry per example, batched along a
new first axis) or {"inputs": ...} (columnar: one value per named input, shapes as given). Values are
converted to the signature's dtype: DT_STRING takes JSON strings or {"b64": "..."} (base64 read as
absl::Base64Unescape does: padding optional, whitespace skipped); integers take JSON integers; floats take any
number the type holds exactly (TF Serving's IsLosslessDecimal: integers up to 2^digits - 1, decimals within
range) and NaN, Infinity, -Infinity, which TF Serving's parser reads and Python's json.dumps writes.
Response: {"predictions": [...]} for row requests (a list of values when the signature has one output, else a
list of {name: value} objects; [] for a zero batch), {"outputs": ...} for columnar ones. Strings come back as
plain JSON strings, or {"b64": ...} for outputs whose name ends in "_bytes"; non-finite floats as NaN,
Infinity, -Infinity; complex outputs are an INVALID_ARGUMENT error, all as TF Serving does.
tests/test_rest_json_cases.py runs TF Serving's own REST JSON test cases against this module.

Deliberate differences from TF Serving:
* extra keys in a columnar "inputs" object are an error rather than ignored (a misspelt knob would otherwise
  be silently dropped);
* the "Inf" / "-Inf" spellings that rapidjson also reads are refused (Python's json module reads NaN,
  Infinity and -Infinity only, which is what clients write);
* float16 and bfloat16 inputs and outputs are converted like float32 ones (TF Serving refuses them), and
  integer inputs are range-checked against their dtype (TF Serving wraps int8/int16/uint8 values).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import orjson
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from serving.errors import ServingError, invalid_argument
from serving.servable import InputInfo

ROW, COLUMNAR = "row", "columnar"
_B64 = "b64"
_BYTES_SUFFIX = "_bytes"
_ASCII_SPACE = re.compile(r"[ \t\n\v\f\r]")  # absl::ascii_isspace, which Base64Unescape skips
_MAX_RANK = 64  # numpy's limit on dimensions
_DIGITS = {tf.float16: 11, tf.bfloat16: 8, tf.float32: 24, tf.float64: 53}  # significand bits
# rapidjson's wording (TF Serving's parser) for the errors Python's json module names differently.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
}


# ------------------------------------------------------------------------------------ request
def parse_request(body: bytes) -> dict:
    if not body or body.isspace():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:  # NaN/Infinity, or not JSON: the slower parser decides
        doc = _parse_with_non_finite(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_dump(doc)} Is not object")
    return doc


class _NumberTooBig(ValueError):
    pass


def _parse_with_non_finite(body: bytes):
    """Python's json module, which reads NaN, Infinity and -Infinity as TF Serving's rapidjson does."""
    try:
        doc = json.loads(body, parse_float=_finite_float)
        if b"\\u" in body:  # an escaped lone surrogate ("\ud800") parses here, but is not UTF-8
            json.dumps(doc, ensure_ascii=False).encode()
        return doc
    except _NumberTooBig as e:
        raise invalid_argument("JSON Parse error: Number too big to be stored in double.") from e
    except json.JSONDecodeError as e:
        message = _PARSE_ERRORS.get(e.msg, e.msg)
        raise invalid_argument(f"JSON Parse error: {message} at offset: {e.pos}") from e
    except UnicodeEncodeError as e:
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.") from e
    except (ValueError, RecursionError) as e:  # not UTF-8; nested deeper than Python's stack
        raise invalid_argument(f"JSON Parse error: {e}") from e


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: rapidjson refuses it (as orjson does) where Python would make it inf
        raise _NumberTooBig(text)
    return value


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
        _add_instance(index, values, named, infos, columns)
    return {name: np.stack(arrays) for name, arrays in columns.items()}


def _add_instance(
    index: int, values: Mapping, named: bool, infos: Mapping[str, InputInfo], columns: dict
) -> None:
    for name, value in values.items():
        try:
            columns[name].append(_instance_value(name, value, infos, columns))
        except ServingError as e:
            key = f" key: {name}" if named else ""
            raise invalid_argument(
                f"Failed to process element: {index}{key} of 'instances' list. Error: {e.message}"
            ) from e
    if set(values) != set(infos):
        raise invalid_argument(
            f"Failed to process element: {index} of 'instances' list. JSON object: "
            f"{_dump(values)} must only have keys: {','.join(sorted(infos))}"
        )


def _instance_value(name: str, value, infos: Mapping[str, InputInfo], columns: dict) -> np.ndarray:
    """One instance's value of input `name`; its size, then its shape, must match the first instance's."""
    info = infos.get(name)
    if info is None:
        raise invalid_argument(f"JSON object: does not have named input: {name}")
    array = json_to_array(value, info, _MAX_RANK - 1)  # the batch takes one dimension
    if columns[name]:
        first = columns[name][0]
        if first.size != array.size:
            raise invalid_argument(f"Expecting tensor size: {first.size} but got: {array.size}")
        if first.shape != array.shape:
            raise invalid_argument(f"Expecting shape {_shape(first.shape)} but got: {_shape(array.shape)}")
    return array


def _shape(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


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
def json_to_array(value, info: InputInfo, max_rank: int = _MAX_RANK) -> np.ndarray:
    """A (nested) JSON value → an array of `info.dtype`; the shape comes from the first element per level."""
    shape = _dense_shape(value)
    if len(shape) > max_rank:  # also keeps _fill's recursion shallow
        raise invalid_argument(f"JSON Value nested {len(shape)} lists deep: at most {max_rank} dims here")
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
        if _is_lossless(value, dtype):
            return value
        raise invalid_argument(
            f"Cannot convert JSON value: {_dump(value)} to {_type_name(dtype)} without loss of precision."
        )
    raise invalid_argument(
        f"JSON Value: {_dump(value)} Type: {_json_type(value)} is not of expected type: {_type_name(dtype)}"
    )


def _type_name(dtype: tf.DType) -> str:
    """TF's DataTypeString, as TF Serving's messages print a dtype: "float", "double", "int32", "string"."""
    return types_pb2.DataType.Name(dtype.as_datatype_enum).removeprefix("DT_").lower()


def _is_lossless(value: int | float, dtype: tf.DType) -> bool:
    """TF Serving's IsLosslessDecimal: exact integers, finite decimals within range, NaN and ±Infinity."""
    max_int, max_value = _float_limits(dtype)
    if isinstance(value, int):
        return abs(value) <= max_int
    return not math.isfinite(value) or abs(value) <= max_value


@functools.cache  # DType.max is slow, and this runs for every value
def _float_limits(dtype: tf.DType) -> tuple[int, float]:
    """Largest integer `dtype` holds exactly (2^digits - 1, as IsLosslessDecimal); its largest value."""
    return 2 ** _DIGITS.get(dtype, 0) - 1, float(dtype.max)


def _is_b64(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(_B64), str)


def _is_named(value) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _decode_b64(value: dict) -> bytes:
    text = value[_B64]
    try:
        return base64.b64decode(text, validate=True)  # canonical base64: the fast path
    except ValueError:  # binascii.Error, or not ASCII
        pass
    try:
        return _absl_b64decode(text)
    except ValueError as e:
        raise invalid_argument("Unable to base64 decode") from e


def _absl_b64decode(text: str) -> bytes:
    """absl::Base64Unescape, which TF Serving uses: ASCII whitespace anywhere (base64.encodebytes's line
    breaks), and the trailing padding ('=' or '.') either complete or left out."""
    data = _ASCII_SPACE.sub("", text)
    body = data.rstrip("=.")
    missing = -len(body) % 4
    if len(body) % 4 == 1 or len(data) - len(body) not in (0, missing):
        raise ValueError("bad base64 length or padding")
    return base64.b64decode(body + "=" * missing, validate=True)


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
    # Python's json writes NaN/Infinity and 1e+39 as TF Serving's error messages do (orjson: null, 1e39).
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
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


def _rows(outputs: Mapping[str, np.ndarray], names: list[str]):
    batch = _batch_size(outputs, names)
    if len(names) == 1:  # the list of predictions is the output itself, batch-major ([] for a zero batch)
        return _json_value(names[0], outputs[names[0]])
    columns = {name: _row_values(name, outputs[name]) for name in names}
    return [{name: columns[name][i] for name in names} for i in range(batch)]


def _batch_size(outputs: Mapping[str, np.ndarray], names: list[str]) -> int:
    batch = None
    for name in names:
        array = outputs[name]
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}"
            )
        batch = array.shape[0]
    return batch


def _row_values(name: str, array: np.ndarray) -> Sequence:
    """`array`'s JSON value per batch row (numpy indexing, or one fragment per row where it has to be one)."""
    value = _json_value(name, array)
    if isinstance(value, orjson.Fragment):  # a fragment cannot be indexed
        return [_json_value(name, row) for row in array]
    return value


def _json_value(name: str, array: np.ndarray):
    """An output array as orjson serializes it: numeric arrays as they are, strings as nested lists."""
    if array.dtype.kind == "c":
        raise invalid_argument(
            f"Failed to write JSON value for tensor type: {_type_name(tf.as_dtype(array.dtype))}"
        )
    if array.dtype.kind not in "OS":
        value = array if array.ndim else array[()]
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            return _non_finite_fragment(value)
        return value
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


def _non_finite_fragment(value: np.ndarray | np.generic) -> orjson.Fragment:
    """`value` serialized with NaN, Infinity and -Infinity as TF Serving writes them (orjson writes null).

    A numeric array's JSON has no strings, so its nulls are exactly its non-finite values, in C order."""
    parts = _dumps(value).split(b"null")
    bad = np.asarray(value)[~np.isfinite(value)]
    tokens = np.where(np.isnan(bad), b"NaN", np.where(bad > 0, b"Infinity", b"-Infinity")).tolist()
    pieces = [b""] * (2 * len(parts) - 1)
    pieces[::2], pieces[1::2] = parts, tokens
    return orjson.Fragment(b"".join(pieces))


def _dumps(doc) -> bytes:
    # OPT_SERIALIZE_NUMPY writes float32 with its shortest round-trip repr, as TF Serving does.
    return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY, default=_fallback)


def _fallback(value):
    if isinstance(value, np.ndarray | np.generic):  # dtypes orjson lacks (float16, non-contiguous views)
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value).__name__}")
