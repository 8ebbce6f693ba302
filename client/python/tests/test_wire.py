"""The hand-built ActivationBatch equals protobuf's own serialization, for every layout the
streamer takes (no server needed)."""

import grpc
import numpy as np
import pytest

import cka
from cka import _wire
from cka._stubs import pb
from conftest import import_torch


def reference(layers):
    out = []
    for name, is_gram, array, dtype in layers:
        tensor = pb.Tensor(shape=array.shape, dtype=dtype,
                           data=np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"))
                           .tobytes())
        out.append(pb.LayerActivation(layer=name, gram=tensor) if is_gram
                   else pb.LayerActivation(layer=name, activations=tensor))
    return pb.ActivationBatch(session_id="s", source="src", batch_id="b", step=300, layers=out)


def test_encoding_equals_protobuf_for_every_layout():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 3, 2)).astype(np.float32)
    g = rng.standard_normal((5, 5))
    cases = [
        ("x", False, a, pb.FLOAT32),
        ("gram", True, g @ g.T, pb.FLOAT64),
        ("strided-f16", False, a.astype(np.float16)[:, ::2], pb.FLOAT16),
        ("big-endian", False, a.astype(">f8"), pb.FLOAT64),
        ("large", False, rng.standard_normal((300, 200)), pb.FLOAT64),  # multi-byte lengths
    ]
    layers = [_wire.to_layer("b", name, array, is_gram) for name, is_gram, array, _ in cases]
    assert [layer.dtype for layer in layers] == [c[3] for c in cases]
    message = _wire.encode("s", "src", "b", 300, layers)
    assert pb.ActivationBatch.FromString(message) == reference(cases)


def test_a_contiguous_array_is_borrowed_not_copied():
    a = np.ones((4, 8), np.float32)
    assert np.shares_memory(_wire.to_layer("b", "x", a, False).array, a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_gram_reduction_is_x_xt_accumulated_in_float64(dtype):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 5000)).astype(dtype)  # more than one column chunk
    layer = _wire.to_layer("b", "x", x, False)
    assert _wire.gram_is_smaller(layer)
    gram = _wire.gram_of(layer)
    x64 = x.astype(np.float64)
    want = x64 @ x64.T
    assert gram.is_gram and gram.shape == (6, 6)
    assert gram.dtype == (pb.FLOAT64 if dtype == np.float64 else pb.FLOAT32)
    np.testing.assert_allclose(gram.array, want, rtol=1e-7 if dtype != np.float64 else 1e-13)
    np.testing.assert_array_equal(gram.array, gram.array.T)


def test_bfloat16_bits_widen_exactly_for_the_gram():
    # bfloat16 is the top half of a float32: 1.5 = 0x3fc0, -2 = 0xc000.
    bits = np.array([[0x3FC0, 0xC000], [0xC000, 0x3FC0], [0x3FC0, 0x3FC0]], np.uint16)
    layer = _wire.Layer("x", False, bits.shape, pb.BFLOAT16, bits)
    np.testing.assert_array_equal(_wire.gram_of(layer).array,
                                  [[6.25, -6.0, -0.75], [-6.0, 6.25, -0.75], [-0.75, -0.75, 4.5]])


def test_torch_tensors_of_every_dtype():
    torch = import_torch()
    for dtype, wire in ((torch.float32, pb.FLOAT32), (torch.float64, pb.FLOAT64),
                        (torch.float16, pb.FLOAT16), (torch.bfloat16, pb.BFLOAT16)):
        t = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(dtype).requires_grad_(
            dtype != torch.float16)
        layer = _wire.to_layer("b", "x", t.t(), False)  # non-contiguous, requires grad
        assert layer.dtype == wire and layer.shape == (4, 3)
        layer = _wire.to_numpy("b", layer)
        widened = (layer.array.astype(np.uint32) << 16).view(np.float32) \
            if wire == pb.BFLOAT16 else layer.array
        np.testing.assert_array_equal(widened, np.arange(12).reshape(3, 4).T)
    with pytest.raises(cka.CkaError):
        _wire.to_layer("b", "x", torch.ones((2, 2), dtype=torch.int32), False)


def test_a_cpu_tensor_is_taken_by_reference_and_a_change_in_place_is_caught():
    torch = import_torch()
    t = torch.arange(24, dtype=torch.float32).reshape(4, 6).requires_grad_()
    layer = _wire.to_layer("b", "x", t, False)
    assert layer.array is t  # nothing converted or copied on the caller's thread
    array = _wire.to_numpy("b", layer).array
    assert np.shares_memory(array, t.detach().numpy())
    assert _wire.modified_in_place("b", layer) is None
    with torch.no_grad():
        t.mul_(2)
    assert _wire.modified_in_place("b", layer) is not None
    with pytest.raises(cka.CkaError) as raised:
        _wire.to_numpy("b", layer)
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "batch 'b' layer 'x'" in raised.value.message and "in place" in raised.value.message
    copied = _wire.to_layer("b", "x", t, False, copy=True)
    with torch.no_grad():
        t.add_(1)
    np.testing.assert_array_equal(_wire.to_numpy("b", copied).array,
                                  2 * np.arange(24, dtype=np.float32).reshape(4, 6))


def test_a_large_message_is_assembled_outside_the_gil_and_equals_protobuf(monkeypatch):
    made = []
    new_bytes = _wire._new_bytes
    monkeypatch.setattr(_wire, "_new_bytes", lambda size: made.append(size) or new_bytes(size))
    rng = np.random.default_rng(2)
    big = rng.standard_normal((64, 4096)).astype(np.float32)  # 1 MiB: NumPy's copies
    cases = [("big", False, big, pb.FLOAT32), ("small", False, big[:, :3], pb.FLOAT32)]
    assert big.nbytes >= _wire._GIL_FREE_COPY_BYTES
    layers = [_wire.to_layer("b", name, array, is_gram) for name, is_gram, array, _ in cases]
    message = _wire.encode("s", "src", "b", 300, layers)
    assert type(message) is bytes and made == [len(message)]  # filled by NumPy's copies
    assert pb.ActivationBatch.FromString(message) == reference(cases)
