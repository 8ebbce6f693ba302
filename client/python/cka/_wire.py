"""Batches on the wire: array conversion and checks, Gram reduction, and the serialized
ActivationBatch built around the tensors' own memory.

Layout: a layer's array of shape (n, d1, d2, ...) is read as the row-major n x d matrix
(d = d1 d2 ...), element (i, j) at flat index i * d + j, little-endian; a Gram is n x n.

The message is serialized by hand around the tensor bytes: the small fields go through
protobuf, and each tensor's bytes are copied exactly once, from the array's memory into the
message (by NumPy, outside Python's lock, for messages of 1 MiB and more; ``_join``). Building a
``Tensor(data=arr.tobytes())`` would copy them three times (tobytes, the protobuf field,
serialization).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from cka._stubs import pb
from cka.errors import CkaError

_NUMPY_DTYPES = {
    np.dtype(np.float32): pb.FLOAT32,
    np.dtype(np.float64): pb.FLOAT64,
    np.dtype(np.float16): pb.FLOAT16,
}
_DTYPE_NAMES = {pb.FLOAT32: "float32", pb.FLOAT64: "float64", pb.FLOAT16: "float16",
                pb.BFLOAT16: "bfloat16"}
_ITEMSIZE = {pb.FLOAT32: 4, pb.FLOAT64: 8, pb.FLOAT16: 2, pb.BFLOAT16: 2}
_TORCH_DTYPES: Optional[Dict[Any, int]] = None  # torch dtype -> pb.DType, once torch is imported
# Columns of X converted to float64 at a time by the Gram reduction (bounds its scratch).
_GRAM_CHUNK_COLUMNS = 4096
# Messages from this size on are assembled by NumPy copies, outside Python's lock (`_join`).
_GIL_FREE_COPY_BYTES = 1 << 20
_FROM_STRING_AND_SIZE: Any = None  # ctypes' PyBytes_FromStringAndSize, once set up
# Bytes a tag, a length prefix and a few small fields add around a payload, generously.
LAYER_OVERHEAD_BYTES = 64
BATCH_OVERHEAD_BYTES = 64


def _bad(message: str) -> CkaError:
    return CkaError(grpc.StatusCode.INVALID_ARGUMENT, message)


@dataclasses.dataclass
class Layer:
    """One layer of a batch: activations (rank >= 2) or an n x n linear Gram K = X X^T.

    `array` holds the payload's elements (bfloat16 as their uint16 bit patterns): the
    caller's memory, not a copy, until the batch is encoded. A CPU torch tensor is kept as the
    caller's tensor (`version` is its in-place counter when submitted) until ``to_numpy``
    turns it into an array on the streamer's thread.
    """

    name: str
    is_gram: bool
    shape: Tuple[int, ...]
    dtype: int  # a pb.DType value
    array: Any  # np.ndarray, or a torch.Tensor before to_numpy
    version: Optional[int] = None  # a torch tensor's in-place counter when taken
    reduce: bool = False  # asks the streamer for the Gram when that is fewer bytes

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _ITEMSIZE[self.dtype]


def _shape_string(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _torch_dtypes(torch) -> Dict[Any, int]:
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        _TORCH_DTYPES = {torch.float32: pb.FLOAT32, torch.float64: pb.FLOAT64,
                         torch.float16: pb.FLOAT16, torch.bfloat16: pb.BFLOAT16}
    return _TORCH_DTYPES


def to_layer(batch_id: str, name: str, value: Any, is_gram: bool, copy: bool = False) -> Layer:
    """Returns the checked layer of a NumPy array or torch tensor, without copying it.

    Reads only the dtype, the shape and the device: no conversion, so that it costs the
    caller's thread O(1) (no torch operation either, each of which would give up Python's
    lock to the streamer's thread and wait to get it back). A CPU tensor stays the caller's
    tensor, with its in-place counter (``to_numpy`` converts it later); a tensor on another
    device is copied to the CPU here; `copy` copies the array or tensor here. Raises CkaError
    INVALID_ARGUMENT naming the batch, the layer and the value for an empty name, a dtype
    other than float32, float64, float16 (or torch's bfloat16), a rank below 2, a Gram that
    is not n x n, or a dimension <= 0.
    """
    where = f"batch '{batch_id}' layer '{name}'"
    if not isinstance(name, str) or not name:
        raise _bad(f"batch '{batch_id}': a layer has no name")
    torch = sys.modules.get("torch")
    version = None
    if torch is not None and isinstance(value, torch.Tensor):
        dtype = _torch_dtypes(torch).get(value.dtype)
        if dtype is None:
            raise _bad(f"{where}: dtype {value.dtype} is not one of float32, float64, float16, "
                       "bfloat16")
        if value.device.type != "cpu":
            value = value.detach().cpu()  # the one copy the caller's thread must make
        elif copy:
            value = value.detach().clone()
        # Inference tensors count no in-place changes: those are not guarded.
        array, version = value, None if value.is_inference() else value._version
    else:
        array = np.array(value, copy=True) if copy else np.asarray(value)
        dtype = _NUMPY_DTYPES.get(array.dtype.newbyteorder("="))
        if dtype is None:
            raise _bad(f"{where}: dtype {array.dtype} is not one of float32, float64, float16 "
                       "(bfloat16: pass a torch tensor)")
    shape = tuple(array.shape)
    if is_gram:
        if len(shape) != 2 or shape[0] != shape[1]:
            raise _bad(f"{where}: Gram shape {_shape_string(shape)}, expected [n, n]")
    elif len(shape) < 2:
        raise _bad(f"{where}: shape {_shape_string(shape)}, expected rank >= 2 "
                   "(examples first)")
    if any(d <= 0 for d in shape):
        raise _bad(f"{where}: shape {_shape_string(shape)} has a dimension <= 0")
    return Layer(name, is_gram, shape, dtype, array, version)


def modified_in_place(batch_id: str, layer: Layer) -> Optional[CkaError]:
    """Returns FAILED_PRECONDITION when `layer`'s torch tensor was changed in place since
    ``to_layer`` (its in-place counter moved), else None."""
    if layer.version is None or layer.array._version == layer.version:
        return None
    return CkaError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"batch '{batch_id}' layer '{layer.name}': the tensor was modified in place after it "
        f"was handed to the streamer (its in-place counter went from {layer.version} to "
        f"{layer.array._version}) and before the batch was encoded; not sent. Submit with "
        "copy=True (ModelHooks: clone=True), or leave it unchanged until flush",
    )


def to_numpy(batch_id: str, layer: Layer) -> Layer:
    """Returns `layer` with a torch tensor's elements as a NumPy array (a view of its memory
    when it is contiguous). Runs on the streamer's thread. Raises the CkaError of
    ``modified_in_place``."""
    if isinstance(layer.array, np.ndarray):
        return layer
    error = modified_in_place(batch_id, layer)
    if error is not None:
        raise error
    t = layer.array.detach().contiguous()
    if layer.dtype == pb.BFLOAT16:
        torch = sys.modules["torch"]
        array = t.view(torch.int16).numpy().view(np.uint16)
    else:
        array = t.numpy()
    return dataclasses.replace(layer, array=array)


def gram_bytes(layer: Layer) -> int:
    """Returns the bytes of the Gram that would replace `layer` (float64 for float64 input,
    float32 otherwise)."""
    return layer.shape[0] * layer.shape[0] * (8 if layer.dtype == pb.FLOAT64 else 4)


def gram_is_smaller(layer: Layer) -> bool:
    """Returns True when sending `layer`'s Gram takes fewer bytes than its activations."""
    return not layer.is_gram and gram_bytes(layer) < layer.nbytes


def gram_float64(x: np.ndarray) -> np.ndarray:
    """Returns the float64 (n, n) Gram X X^T of the (n, d) float array `x`, accumulated in
    float64 (products of float32 or float16 values are exact in float64, so only the
    summation rounds), exactly symmetric. Converts `_GRAM_CHUNK_COLUMNS` columns at a time."""
    n, d = x.shape
    k = np.zeros((n, n), dtype=np.float64)
    for start in range(0, d, _GRAM_CHUNK_COLUMNS):
        chunk = np.ascontiguousarray(x[:, start:start + _GRAM_CHUNK_COLUMNS], dtype=np.float64)
        k += chunk @ chunk.T  # NumPy runs syrk for a @ a.T: half the flops, symmetric
    return k


def _rows(layer: Layer) -> np.ndarray:
    """Returns `layer`'s activations as an n x d array of floats (bfloat16 widened)."""
    x = layer.array.reshape(layer.shape[0], -1)
    if layer.dtype == pb.BFLOAT16:
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x


def first_non_finite(source: str, batch_id: str, layer: Layer) -> Optional[CkaError]:
    """Returns ckad's INVALID_ARGUMENT for the first NaN or Inf of `layer`'s n x d
    activations (row-major), naming the stream, the batch, the value, its row (the example)
    and column, or None when all are finite. For a layer whose Gram is not finite: a NaN in
    the Gram's row 0 would blame example 0 for every example's NaN."""
    x = _rows(layer)
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size == 0:
        return None
    row, col = divmod(int(bad[0]), x.shape[1])
    return _bad(f"layer '{source}/{layer.name}' batch '{batch_id}': value "
                f"{float(x[row, col]):g} at row {row}, column {col} is not finite (NaN or Inf)")


def gram_of(layer: Layer) -> Layer:
    """Returns the n x n linear Gram K = X X^T of `layer`'s n x d activations.

    Accumulates in float64 (float32 products are exact in float64, so only the final
    rounding remains), then sends float32, or float64 for float64 input. Runs on the
    streamer's thread; its scratch is n x 4096 float64.
    """
    n = layer.shape[0]
    k = gram_float64(_rows(layer))
    if layer.dtype == pb.FLOAT64:
        return Layer(layer.name, True, (n, n), pb.FLOAT64, k)
    return Layer(layer.name, True, (n, n), pb.FLOAT32, k.astype(np.float32))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _payload(array: np.ndarray, dtype: int) -> memoryview:
    """Returns the little-endian, C-contiguous bytes of `array` (a view when it is already)."""
    if dtype != pb.BFLOAT16 and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    elif dtype == pb.BFLOAT16 and array.dtype.byteorder == ">":
        array = array.astype("<u2")
    if not array.flags.c_contiguous:
        array = np.ascontiguousarray(array)
    return memoryview(array).cast("B")


def encode(session_id: str, source: str, batch_id: str, step: int,
           layers: List[Layer]) -> bytes:
    """Returns the serialized cka.v1.ActivationBatch of the batch.

    Equal to ``ActivationBatch(...).SerializeToString()`` up to field order, which protobuf
    parsers accept: the tensor bytes are placed last in each Tensor.
    """
    parts: List[Any] = [
        pb.ActivationBatch(session_id=session_id, source=source, batch_id=batch_id,
                           step=step).SerializeToString()
    ]
    for layer in layers:
        data = _payload(layer.array, layer.dtype)
        size = data.nbytes
        tensor_head = pb.Tensor(shape=layer.shape, dtype=layer.dtype).SerializeToString()
        data_head = b"\x1a" + _varint(size)  # Tensor.data: field 3, length-delimited
        tensor_len = len(tensor_head) + len(data_head) + size
        # LayerActivation.activations is field 2, .gram field 3.
        layer_head = (pb.LayerActivation(layer=layer.name).SerializeToString()
                      + (b"\x1a" if layer.is_gram else b"\x12") + _varint(tensor_len)
                      + tensor_head + data_head)
        # ActivationBatch.layers: field 5, length-delimited.
        parts.append(b"\x2a" + _varint(len(layer_head) + size) + layer_head)
        parts.append(data)
    return _join(parts)


def _new_bytes(size: int) -> Optional[Tuple[bytes, np.ndarray]]:
    """Returns a new, uninitialised bytes object of `size` bytes and a writable uint8 view of
    its memory, for filling it before anyone else sees it (CPython's documented use of
    PyBytes_FromStringAndSize(NULL, size)); None where ctypes cannot reach that function."""
    global _FROM_STRING_AND_SIZE
    if _FROM_STRING_AND_SIZE is None:
        try:
            function = ctypes.pythonapi.PyBytes_FromStringAndSize
        except AttributeError:
            return None
        function.restype = ctypes.py_object
        function.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]
        _FROM_STRING_AND_SIZE = function
    message = _FROM_STRING_AND_SIZE(None, size)
    address = np.frombuffer(message, np.uint8).ctypes.data
    return message, np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))


def _join(parts: List[Any]) -> bytes:
    """Returns the concatenation of `parts` (bytes and memoryviews).

    ``bytes.join`` keeps Python's lock (the GIL) while it copies memoryviews; above
    `_GIL_FREE_COPY_BYTES` the parts are copied by NumPy instead, which gives the lock up
    during the copy (and the page faults of the new buffer), so that the training thread does
    not wait on the streamer's thread for the length of a multi-megabyte memcpy.
    """
    total = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in parts)
    fresh = _new_bytes(total) if total >= _GIL_FREE_COPY_BYTES else None
    if fresh is None:
        return b"".join(parts)
    message, out = fresh
    at = 0
    for part in parts:
        source = np.frombuffer(part, np.uint8)
        np.copyto(out[at:at + source.size], source)
        at += source.size
    return message
