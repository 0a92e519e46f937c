"""serving.tensors: the fast TensorProto converters agree with tf.make_tensor_proto / tf.make_ndarray."""



import numpy as np
import pytest
import tensorflow as tf

from serving import tensors

CASES = [
    np.array([b"u1", b"u2"], object),
    np.array([[b"i1", b""], [b"i2", b"i3"]], object),
    np.array(["text", "ünïcode"]),
    np.array(b"scalar", object),
    np.zeros([1, 0], object),
    np.array(10, np.int32),
    np.array([[1, -2, 3]], np.int64),
    np.array([0.25, -1.5], np.float32),
    np.array([[0.1]], np.float64),
    np.array([True, False]),
]


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{v.dtype}{list(v.shape)}")
def test_to_proto_decodes_like_tensorflow(value):
    proto = tensors.to_proto(value)
    expected = tf.make_tensor_proto(value)
    assert proto.dtype == expected.dtype
    assert proto.tensor_shape == expected.tensor_shape
    np.testing.assert_array_equal(tf.make_ndarray(proto), tf.make_ndarray(expected))


@pytest.mark.parametrize("value", CASES, ids=lambda v: f"{v.dtype}{list(v.shape)}")
def test_to_ndarray_matches_make_ndarray(value):
    proto = tf.make_tensor_proto(value)
    result = tensors.to_ndarray(proto)
    expected = tf.make_ndarray(proto)
    assert result.dtype == expected.dtype and result.shape == expected.shape
    np.testing.assert_array_equal(result, expected)
    result.flat[:0] = []  # writable, like make_ndarray's result


@pytest.mark.parametrize("value", [0.5, 10, [1, 2], [[0.25]], True, 2**40, [b"a"], "text"], ids=repr)
def test_python_values_get_tensorflows_dtypes(value):
    proto, expected = tensors.to_proto(value), tf.make_tensor_proto(value)
    assert proto.dtype == expected.dtype and proto.tensor_shape == expected.tensor_shape
    np.testing.assert_array_equal(tensors.to_ndarray(proto), tf.make_ndarray(expected))


def test_dtype_casts_like_tensorflow():
    proto = tensors.to_proto(np.array(5), dtype=tf.int32)  # a Python int arrives as int64
    assert proto.dtype == tf.int32.as_datatype_enum
    assert tensors.to_ndarray(proto).tolist() == 5
    assert tensors.to_ndarray(tensors.to_proto([0.5], dtype=tf.float32)).dtype == np.float32
    lossy = np.array([1.5, 2.0])  # not exact in int32: TensorFlow's own conversion decides
    expected = tf.make_ndarray(tf.make_tensor_proto(lossy, dtype=tf.int32))
    np.testing.assert_array_equal(tensors.to_ndarray(tensors.to_proto(lossy, dtype=tf.int32)), expected)


def test_repeated_value_fields_and_broadcast_go_through_tensorflow():
    proto = tf.make_tensor_proto(7, dtype=tf.int64, shape=[3])  # one int64_val broadcast to 3
    np.testing.assert_array_equal(tensors.to_ndarray(proto), [7, 7, 7])
    listed = tf.make_tensor_proto(np.array([1, 2], np.int32))
    listed.ClearField("tensor_content")
    listed.int_val.extend([1, 2])
    np.testing.assert_array_equal(tensors.to_ndarray(listed), [1, 2])


def test_malformed_content_raises_like_tensorflow():
    proto = tf.make_tensor_proto(np.array([1, 2, 3], np.int32))
    proto.tensor_shape.dim[0].size = 4
    with pytest.raises((TypeError, ValueError)):
        tensors.to_ndarray(proto)
