"""TensorProto ⇄ numpy for the dtypes serving signatures use, with TensorFlow's converters as the fallback.

`tf.make_tensor_proto` and `tf.make_ndarray` are general (any dtype, broadcasting, nested lists) and cost
~40 µs per tensor in Python; a `recommend` call over gRPC converts eight tensors on each side, which was
most of the gap between gRPC and REST in `make bench-serve`. For numeric arrays and string arrays these two
functions write and read the same TensorProto fields TensorFlow does (`tensor_content` for numbers,
`string_val` for strings); anything else goes through TensorFlow, so the results are always the same.

Example:
  proto = to_proto(np.array([[1, 2]], np.int32))
  to_ndarray(proto)  # array([[1, 2]], dtype=int32)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

# numpy dtype ⇄ TensorFlow DataType enum for the types whose bytes `tensor_content` holds as is.
_NUMERIC = {
    np.dtype(np.float32): types_pb2.DT_FLOAT,
    np.dtype(np.float64): types_pb2.DT_DOUBLE,
    np.dtype(np.int32): types_pb2.DT_INT32,
    np.dtype(np.int64): types_pb2.DT_INT64,
    np.dtype(np.bool_): types_pb2.DT_BOOL,
}
_NUMPY_OF = {enum: dtype for dtype, enum in _NUMERIC.items()}
_PYTHON_DEFAULTS = {np.dtype(np.float64): tf.float32, np.dtype(np.int64): tf.int32}
# `tf.make_ndarray` reads `tensor_content` in the host's byte order; TensorFlow writes it little-endian.
_LITTLE_ENDIAN = np.little_endian


def to_proto(value, dtype: tf.DType | None = None) -> tensor_pb2.TensorProto:
    """A numpy array (or anything `np.asarray` takes) → TensorProto of `dtype` (default: the array's)."""
    array = np.asarray(value)
    if _is_text(array) and dtype in (None, tf.string):
        proto = _with_shape(types_pb2.DT_STRING, array.shape)
        proto.string_val.extend(v.encode() if isinstance(v, str) else bytes(v) for v in array.ravel())
        return proto
    target = dtype
    if target is None and not isinstance(value, (np.ndarray, np.generic)):
        # Python numbers: TensorFlow infers float32 / int32 where numpy says float64 / int64.
        target = _PYTHON_DEFAULTS.get(array.dtype)
    if target is not None:
        array = _cast_exactly(array, np.dtype(target.as_numpy_dtype))
    if array is None or array.dtype not in _NUMERIC or not _LITTLE_ENDIAN:
        return tf.make_tensor_proto(value, dtype=dtype)
    proto = _with_shape(_NUMERIC[array.dtype], array.shape)
    proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """TensorProto → numpy array (object array of bytes for strings), like `tf.make_ndarray`.

    Raises:
      TypeError / ValueError: as `tf.make_ndarray` does on a malformed proto (e.g. content size vs shape).
    """
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    size = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == types_pb2.DT_STRING and len(proto.string_val) == size:
        return np.array(list(proto.string_val), dtype=object).reshape(shape)
    numpy_dtype = _NUMPY_OF.get(proto.dtype)
    if numpy_dtype is not None and proto.tensor_content and _LITTLE_ENDIAN:
        if len(proto.tensor_content) == size * numpy_dtype.itemsize:
            return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape).copy()
    return tf.make_ndarray(proto)  # repeated *_val fields, broadcast scalars, other dtypes, errors


def _with_shape(dtype: int, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    proto.tensor_shape.dim.extend(tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in shape)
    return proto


def _cast_exactly(array: np.ndarray, dtype: np.dtype) -> np.ndarray | None:
    """`array` as `dtype` when that keeps every value (int64 10 → int32 10); None otherwise."""
    if array.dtype == dtype:
        return array
    if array.dtype.kind != dtype.kind or dtype not in _NUMERIC:
        return None
    cast = array.astype(dtype)
    return cast if np.array_equal(cast, array) else None


def _is_text(array: np.ndarray) -> bool:
    if array.dtype.kind in "SU":
        return True
    return array.dtype == object and all(isinstance(v, (bytes, str)) for v in array.ravel())
