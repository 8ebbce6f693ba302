#!/usr/bin/python3
"""Generates the test vectors of tests/core from an independent float64 numpy oracle.

Run with Debian's python3-numpy (the pyenv python3 on PATH has no numpy):

    /usr/bin/python3 tests/core/data/make_vectors.py

Everything is seeded, so a rerun writes byte-identical files. The oracle below is written from
core/MATH.md with the direct trace formulas (tr(KHLH), Song's unbiased HSIC), not the fast U-centred
form the engine uses, so a shared mistake is unlikely.

File format (one JSON object per scenario file):
  streams:  [{name, source, layer, dtype, trailing_shape}]    dtype: float64|float32|float16|bfloat16
  batches:  [{batch_id, step, n, layers: {stream_name: DATA}}]
            DATA is {"values": [...]} for float64 (JSON doubles, full repr) and for
            float16/bfloat16 (the raw uint16 bit patterns), or {"b64": "..."} holding the
            little-endian bytes of the tensor (used for the large float32 activations).
  measures: [{name, kernel: linear|rbf, threshold, estimator: unbiased|biased|exact|exact_debiased}]
  declared: whether the session declares its streams (required by exact measures)
  step_bucket, expected: {measure: {values, batches}} for the whole session (row-major over
  `streams`, null = no value), and ranges: [{step_min, step_max, expected: {...}}].
"""

import base64
import json
import os

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))


# --------------------------------------------------------------------------------------------
# The oracle (core/MATH.md), float64 throughout.
# --------------------------------------------------------------------------------------------


def linear_gram(x):
  return x @ x.T


def rbf_gram(x, threshold):
  k = x @ x.T
  sq = np.diag(k)
  d2 = sq[:, None] + sq[None, :] - 2.0 * k
  d2 = np.maximum(d2, 0.0)
  m = np.median(d2)  # all n^2 entries, diagonal zeros included
  assert m > 0
  return np.exp(-d2 / (2.0 * threshold**2 * m))


def hsic_biased(k, l):
  n = k.shape[0]
  h = np.eye(n) - np.ones((n, n)) / n
  return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def hsic_unbiased(k, l):
  n = k.shape[0]
  assert n >= 4
  kt = k.copy()
  lt = l.copy()
  np.fill_diagonal(kt, 0.0)
  np.fill_diagonal(lt, 0.0)
  one = np.ones(n)
  term1 = np.trace(kt @ lt)
  term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
  term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
  return (term1 + term2 - term3) / (n * (n - 3))


def kernel_of(x, measure):
  if measure["kernel"] == "linear":
    return linear_gram(x)
  return rbf_gram(x, measure["threshold"])


def hsic_of(measure):
  return hsic_biased if measure["estimator"] in ("biased", "exact") else hsic_unbiased


def cka(k, l, hsic):
  return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def feature_space_cka(x, y):
  """Exact linear CKA written as in core/MATH.md, "Exact feature-space CKA" (a self-check)."""
  def c(a, b):
    n = a.shape[0]
    return a.T @ b - n * np.outer(a.mean(0), b.mean(0))
  return np.sum(c(x, y) ** 2) / (np.linalg.norm(c(x, x)) * np.linalg.norm(c(y, y)))


def minibatch_expected(streams, batches, measure, step_range=None):
  """A_st / sqrt(A_ss A_tt), all three sums over the pair's common batches."""
  names = [s["name"] for s in streams]
  sel = [b for b in batches
         if step_range is None or step_range[0] <= b["step"] <= step_range[1]]
  hsic = hsic_of(measure)
  kernels = [{s: kernel_of(x, measure) for s, x in b["x"].items()} for b in sel]
  values, counts = [], []
  for s in names:
    for t in names:
      common = [k for k in kernels if s in k and t in k]
      a_st = sum(hsic(k[s], k[t]) for k in common)
      a_ss = sum(hsic(k[s], k[s]) for k in common)
      a_tt = sum(hsic(k[t], k[t]) for k in common)
      counts.append(len(common))
      if not common or a_ss <= 0 or a_tt <= 0:
        values.append(None)
      else:
        values.append(float(a_st / np.sqrt(a_ss * a_tt)))
  return {"values": values, "batches": counts}


def exact_expected(streams, batches, measure):
  """Gram-form CKA over every row of the batches in which all declared streams arrived."""
  names = [s["name"] for s in streams]
  counted = [b for b in batches if all(s in b["x"] for s in names)]
  hsic = hsic_of(measure)
  whole = {s: np.vstack([b["x"][s] for b in counted]) for s in names}
  values, counts = [], []
  for s in names:
    for t in names:
      values.append(float(cka(linear_gram(whole[s]), linear_gram(whole[t]), hsic)))
      counts.append(len(counted))
      if measure["estimator"] == "exact":
        assert abs(values[-1] - feature_space_cka(whole[s], whole[t])) < 1e-12
  return {"values": values, "batches": counts}


def expected_for(streams, batches, measure, step_range=None):
  if measure["estimator"] in ("exact", "exact_debiased"):
    return exact_expected(streams, batches, measure)
  return minibatch_expected(streams, batches, measure, step_range)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def f16_bits(x):
  return x.astype(np.float16).view(np.uint16)


def f16_decode(bits):
  return bits.view(np.float16).astype(np.float64)


def bf16_bits(x):
  u = np.ascontiguousarray(x.astype(np.float32)).view(np.uint32).astype(np.uint64)
  rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest, ties to even
  return rounded.astype(np.uint16)


def bf16_decode(bits):
  return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def encode(x, dtype):
  """Returns (the JSON data, the float64 values the engine sees)."""
  flat = np.ascontiguousarray(x.reshape(x.shape[0], -1))
  if dtype == "float64":
    return {"values": [float(v) for v in flat.ravel()]}, flat.astype(np.float64)
  if dtype == "float32":
    f = flat.astype("<f4")
    return ({"b64": base64.b64encode(f.tobytes()).decode("ascii")}, f.astype(np.float64))
  if dtype == "float16":
    bits = f16_bits(flat)
    return {"values": [int(v) for v in bits.ravel()]}, f16_decode(bits)
  if dtype == "bfloat16":
    bits = bf16_bits(flat)
    return {"values": [int(v) for v in bits.ravel()]}, bf16_decode(bits)
  raise ValueError(dtype)


def stream(name, dtype="float64", trailing_shape=None):
  source, _, layer = name.rpartition("/")
  return {"name": name, "source": source, "layer": layer, "dtype": dtype,
          "trailing_shape": trailing_shape}


def build_scenario(streams, raw_batches, measures, declared=False, step_bucket=0,
                   ranges=()):
  """raw_batches: [(batch_id, step, {stream_name: array n × trailing_shape})]."""
  by_name = {s["name"]: s for s in streams}
  batches_json, batches_math = [], []
  for batch_id, step, layers in raw_batches:
    n = next(iter(layers.values())).shape[0]
    bj = {"batch_id": batch_id, "step": step, "n": n, "layers": {}}
    bm = {"step": step, "x": {}}
    for name, x in layers.items():
      s = by_name[name]
      if s["trailing_shape"] is None:
        s["trailing_shape"] = list(x.shape[1:])
      assert list(x.shape[1:]) == s["trailing_shape"], name
      assert x.shape[0] == n
      bj["layers"][name], bm["x"][name] = encode(x, s["dtype"])
    batches_json.append(bj)
    batches_math.append(bm)
  scenario = {
      "streams": streams, "batches": batches_json, "measures": measures,
      "declared": declared, "step_bucket": step_bucket,
      "expected": {m["name"]: expected_for(streams, batches_math, m) for m in measures},
      "ranges": [],
  }
  for lo, hi in ranges:
    scenario["ranges"].append({
        "step_min": lo, "step_max": hi,
        "expected": {m["name"]: expected_for(streams, batches_math, m, (lo, hi))
                     for m in measures if m["estimator"] in ("unbiased", "biased")}})
  return scenario, batches_math


def measure(name, kernel, estimator, threshold=0.0):
  return {"name": name, "kernel": kernel, "threshold": threshold, "estimator": estimator}


MINIBATCH_MEASURES = [
    measure("linear", "linear", "unbiased"),
    measure("linear_biased", "linear", "biased"),
    measure("rbf0.2", "rbf", "unbiased", 0.2),
    measure("rbf0.2_biased", "rbf", "biased", 0.2),
    measure("rbf0.5", "rbf", "unbiased", 0.5),
    measure("rbf0.5_biased", "rbf", "biased", 0.5),
    measure("rbf0.8", "rbf", "unbiased", 0.8),
    measure("rbf0.8_biased", "rbf", "biased", 0.8),
]
EXACT_MEASURES = [measure("exact", "linear", "exact"),
                  measure("exact_debiased", "linear", "exact_debiased")]


def write(name, obj):
  path = os.path.join(OUT, name)
  with open(path, "w") as f:
    json.dump(obj, f, separators=(",", ":"), allow_nan=False)
    f.write("\n")
  print(f"wrote {name}: {os.path.getsize(path)} bytes")


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


def golden():
  np.random.seed(1337)
  x = np.random.randn(100, 10)
  y = np.random.randn(100, 10) + x
  lin = cka(linear_gram(x), linear_gram(y), hsic_biased)
  rbf = cka(rbf_gram(x, 0.5), rbf_gram(y, 0.5), hsic_biased)
  deb = cka(linear_gram(x), linear_gram(y), hsic_unbiased)
  paper = {"linear": 0.55761, "rbf0.5_biased": 0.65483, "debiased": 0.51346}
  assert abs(lin - paper["linear"]) < 5e-6, lin
  assert abs(rbf - paper["rbf0.5_biased"]) < 5e-6, rbf
  assert abs(deb - paper["debiased"]) < 5e-6, deb
  measures = [measure("linear", "linear", "unbiased"),
              measure("linear_biased", "linear", "biased"),
              measure("rbf0.5_biased", "rbf", "biased", 0.5),
              measure("rbf0.5", "rbf", "unbiased", 0.5)] + EXACT_MEASURES
  scenario, _ = build_scenario([stream("x"), stream("y")], [("all", 0, {"x": x, "y": y})],
                               measures, declared=True)
  scenario["paper"] = paper
  scenario["numpy"] = {"linear_cka": lin, "rbf0.5_cka": rbf, "debiased_linear_cka": deb}
  write("golden.json", scenario)


def correlated(rng, z, out_shape, nonlinear):
  """An activation correlated with the latent z (n × k)."""
  d = int(np.prod(out_shape))
  w = rng.standard_normal((z.shape[1], d))
  a = z @ w + 0.7 * rng.standard_normal((z.shape[0], d))
  if nonlinear:
    a = np.tanh(a)
  return a.reshape((z.shape[0],) + tuple(out_shape))


def multibatch():
  rng = np.random.default_rng(20240611)
  streams = [stream("resnet/conv1"), stream("resnet/fc"), stream("vit/block0"),
             stream("vit/head"), stream("probe")]
  shapes = {"resnet/conv1": (4, 6), "resnet/fc": (5,), "vit/block0": (2, 4),
            "vit/head": (3,), "probe": (6,)}
  plan = [  # batch_id, step, n, streams present
      ("b0", 0, 8, ["resnet/conv1", "resnet/fc", "vit/block0", "vit/head", "probe"]),
      ("b1", 3, 5, ["resnet/conv1", "resnet/fc", "vit/block0", "probe"]),
      ("b2", 10, 12, ["resnet/conv1", "resnet/fc", "vit/head"]),
      ("b3", 15, 6, ["resnet/conv1", "resnet/fc", "vit/block0", "vit/head"]),
      ("b4", 27, 9, ["resnet/fc", "vit/block0", "vit/head", "probe"]),
      ("b5", 29, 7, ["resnet/conv1", "vit/block0", "probe"]),
  ]
  raw = []
  for i, (bid, step, n, present) in enumerate(plan):
    z = rng.standard_normal((n, 3))
    layers = {}
    for j, s in enumerate(streams):
      x = correlated(rng, z, shapes[s["name"]], nonlinear=(j % 2 == 1))
      if s["name"] in present:
        layers[s["name"]] = x
    raw.append((bid, step, layers))
  ranges = [(0, 9), (10, 19), (20, 29), (0, 19), (10, 29), (0, 29), (30, 39)]
  # Declared: with undeclared streams a batch is complete once the streams seen so far
  # arrived, so the first batch of a new source would complete before that source's message.
  scenario, _ = build_scenario(streams, raw, MINIBATCH_MEASURES, declared=True,
                               step_bucket=10, ranges=ranges)
  write("multibatch.json", scenario)


def equal_n():
  """Every stream in every batch, equal n: CKA is mean HSIC over batches (efficient_CKA.py)."""
  rng = np.random.default_rng(7)
  streams = [stream("m/a"), stream("m/b"), stream("m/c")]
  raw, per_batch = [], []
  for b in range(4):
    z = rng.standard_normal((10, 2))
    layers = {"m/a": correlated(rng, z, (7,), False), "m/b": correlated(rng, z, (3, 3), True),
              "m/c": rng.standard_normal((10, 4))}
    raw.append((f"e{b}", b, layers))
  measures = MINIBATCH_MEASURES[:2]
  scenario, math_batches = build_scenario(streams, raw, measures)
  # Independently of minibatch_expected: per-batch HSIC matrices averaged over batches.
  for m in measures:
    hsic = hsic_of(m)
    names = [s["name"] for s in streams]
    mean = np.zeros((3, 3))
    for b in math_batches:
      k = [linear_gram(b["x"][s]) for s in names]
      mean += np.array([[hsic(k[i], k[j]) for j in range(3)] for i in range(3)]) / 4
    d = np.sqrt(np.diag(mean))
    by_mean = mean / np.outer(d, d)
    got = np.array(scenario["expected"][m["name"]]["values"]).reshape(3, 3)
    assert np.allclose(by_mean, got, rtol=1e-13, atol=0), (by_mean, got)
  write("equal_n.json", scenario)


def exact():
  rng = np.random.default_rng(99)
  streams = [stream("enc/l0"), stream("enc/l1"), stream("dec/out")]
  shapes = {"enc/l0": (5,), "enc/l1": (3, 2), "dec/out": (4,)}
  raw = []
  for b, n in enumerate([6, 9, 4, 11, 7]):
    z = rng.standard_normal((n, 2))
    layers = {s["name"]: correlated(rng, z, shapes[s["name"]], b % 2 == 0) for s in streams}
    if b == 2:
      del layers["dec/out"]  # never completed: no exact estimator may count it
    raw.append((f"x{b}", 10 * b, layers))
  scenario, _ = build_scenario(streams, raw, EXACT_MEASURES + MINIBATCH_MEASURES[:2],
                               declared=True)
  scenario["stream_widths"] = [5, 6, 4]
  write("exact.json", scenario)


def properties():
  """x, x·Q (Q orthogonal), 3.7·x, x·A (A invertible, not orthogonal), y."""
  rng = np.random.default_rng(4242)
  d = 6
  q, _ = np.linalg.qr(rng.standard_normal((d, d)))
  a = np.diag([0.05, 0.2, 1.0, 3.0, 8.0, 20.0]) @ rng.standard_normal((d, d))
  assert abs(np.linalg.det(a)) > 1e-2
  streams = [stream("p/x"), stream("p/xq"), stream("p/cx"), stream("p/xa"), stream("p/y")]
  raw = []
  for b, n in enumerate([30, 24]):
    x = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d)
    y = np.tanh(x @ rng.standard_normal((d, 5))) + 0.3 * rng.standard_normal((n, 5))
    raw.append((f"p{b}", 0, {"p/x": x, "p/xq": x @ q, "p/cx": 3.7 * x, "p/xa": x @ a,
                             "p/y": y}))
  measures = MINIBATCH_MEASURES[:2] + MINIBATCH_MEASURES[4:6] + EXACT_MEASURES
  scenario, _ = build_scenario(streams, raw, measures, declared=True)
  for m in measures:
    v = np.array(scenario["expected"][m["name"]]["values"]).reshape(5, 5)
    assert abs(v[0, 4] - v[1, 4]) < 1e-12 and abs(v[0, 4] - v[2, 4]) < 1e-12
    assert abs(v[0, 4] - v[3, 4]) > 1e-2, (m, v[0, 4], v[3, 4])
  write("properties.json", scenario)


def low_precision():
  rng = np.random.default_rng(16)
  streams = [stream("h/f16a", "float16"), stream("h/f16b", "float16"),
             stream("h/bf16a", "bfloat16"), stream("h/bf16b", "bfloat16")]
  raw = []
  for b, n in enumerate([40, 24]):
    z = rng.standard_normal((n, 3))
    layers = {"h/f16a": correlated(rng, z, (16,), False),
              "h/f16b": correlated(rng, z, (2, 6), True),
              "h/bf16a": correlated(rng, z, (16,), True),
              "h/bf16b": 5.0 * correlated(rng, z, (9,), False)}
    raw.append((f"h{b}", 0, layers))
  scenario, math_batches = build_scenario(streams, raw, MINIBATCH_MEASURES[:2])
  # The decoding differs from plain float64 by the 16-bit rounding; make sure it happened.
  assert not np.array_equal(math_batches[0]["x"]["h/bf16a"],
                            raw[0][2]["h/bf16a"].reshape(40, -1))
  write("low_precision.json", scenario)


def realistic():
  """ReLU activations of random projections, sent as float32."""
  rng = np.random.default_rng(31337)
  streams = [stream("net/relu1", "float32"), stream("net/relu2", "float32"),
             stream("net/relu3", "float32")]
  raw = []
  for b, n in enumerate([96, 64]):
    x0 = rng.standard_normal((n, 64))
    h1 = np.maximum(x0 @ rng.standard_normal((64, 256)) / 8.0, 0)
    h2 = np.maximum(h1 @ rng.standard_normal((256, 384)) / 16.0, 0)
    h3 = np.maximum(h2 @ rng.standard_normal((384, 448)) / np.sqrt(384), 0)
    raw.append((f"r{b}", 0, {"net/relu1": h1, "net/relu2": h2.reshape(n, 6, 64),
                             "net/relu3": h3}))
  scenario, math_batches = build_scenario(streams, raw, MINIBATCH_MEASURES[:2] +
                                          MINIBATCH_MEASURES[4:6])
  # For the report: how far a float32 Gram (numpy sgemm) moves the answers.
  worst = 0.0
  for m in MINIBATCH_MEASURES[:2]:
    hsic = hsic_of(m)
    exp = scenario["expected"][m["name"]]["values"]
    names = [s["name"] for s in streams]
    vals = []
    for s in names:
      for t in names:
        ks = [linear_gram(b["x"][s].astype(np.float32)).astype(np.float64)
              for b in math_batches]
        kt = [linear_gram(b["x"][t].astype(np.float32)).astype(np.float64)
              for b in math_batches]
        a_st = sum(hsic(p, q) for p, q in zip(ks, kt))
        a_ss = sum(hsic(p, p) for p in ks)
        a_tt = sum(hsic(q, q) for q in kt)
        vals.append(a_st / np.sqrt(a_ss * a_tt))
    worst = max(worst, max(abs(v - e) / abs(e) for v, e in zip(vals, exp)))
  print(f"realistic: float32-Gram numpy relative deviation {worst:.2e}")
  write("realistic.json", scenario)


def hsic_small():
  """Direct vectors for the hsic.h functions: kernels, median, centred kernels, HSIC values."""
  rng = np.random.default_rng(5)
  cases = []
  for n in (7, 8):
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((n, 2)) + x[:, :2]
    k, l = linear_gram(x), linear_gram(y)
    sq = np.diag(k)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * k, 0)
    kt = k.copy()
    np.fill_diagonal(kt, 0)
    c = kt.sum(1)
    s = c.sum()
    khat = kt - (c[:, None] + c[None, :]) / (n - 2) + s / ((n - 1) * (n - 2))
    np.fill_diagonal(khat, 0)
    h = np.eye(n) - 1.0 / n
    lt = l.copy()
    np.fill_diagonal(lt, 0)
    cl = lt.sum(1)
    lhat = lt - (cl[:, None] + cl[None, :]) / (n - 2) + lt.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(lhat, 0)
    # The fast form agrees with the direct formulas (core/MATH.md, "Fast form"; checked here).
    assert abs(np.sum(khat * lhat) - n * (n - 3) * hsic_unbiased(k, l)) < 1e-9
    assert abs(np.sum((h @ k @ h) * (h @ l @ h)) - (n - 1) ** 2 * hsic_biased(k, l)) < 1e-9
    flat = lambda a: [float(v) for v in a.ravel()]
    cases.append({
        "n": n, "x": flat(x), "dx": 3, "y": flat(y), "dy": 2, "k": flat(k), "l": flat(l),
        "median_d2_k": float(np.median(d2)), "rbf0.5_k": flat(rbf_gram(x, 0.5)),
        "ucenter_scaled_k": flat(khat / np.sqrt(n * (n - 3))),
        "double_center_scaled_k": flat(h @ k @ h / (n - 1)),
        "hsic_unbiased_kl": float(hsic_unbiased(k, l)),
        "hsic_biased_kl": float(hsic_biased(k, l)),
    })
  write("hsic_small.json", {"cases": cases})


if __name__ == "__main__":
  golden()
  multibatch()
  equal_n()
  exact()
  properties()
  low_precision()
  realistic()
  hsic_small()
