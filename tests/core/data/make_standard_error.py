#!/usr/bin/python3
"""Generates data/standard_error.json: the delta-method standard error of a minibatch CKA entry
(core/MATH.md, "Standard error of a minibatch CKA entry") computed by numpy from per-batch values.

Run with Debian's python3-numpy:

    /usr/bin/python3 tests/core/data/make_standard_error.py

Seeded, so a rerun writes a byte-identical file. The oracle takes the sample covariance with
numpy.cov of the per-batch vectors (a_b, u_b, v_b) and the gradient of mean(a)/sqrt(mean(u)
mean(v)); ckad computes the same from nine running sums, so a wrong sum, divisor or gradient term
shows.

File format: cases: [{name, a, u, v (m values each), cka, se (null = no value)}].
"""

import json
import os

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))


def oracle(a, u, v):
  m = len(a)
  if m < 1 or np.mean(u) <= 0 or np.mean(v) <= 0:
    return None, None
  root = np.sqrt(np.mean(u) * np.mean(v))
  cka = np.mean(a) / root
  if m < 2:
    return cka, None
  g = np.array([1.0 / root, -np.mean(a) / (2 * np.mean(u) * root),
                -np.mean(a) / (2 * np.mean(v) * root)])
  sigma = np.cov(np.vstack([a, u, v]))  # divisor m - 1
  return cka, float(np.sqrt(max(g @ sigma @ g, 0.0) / m))


def case(name, a, u, v):
  a, u, v = (np.asarray(t, dtype=np.float64) for t in (a, u, v))
  cka, se = oracle(a, u, v)
  return {"name": name, "a": a.tolist(), "u": u.tolist(), "v": v.tolist(),
          "cka": None if cka is None else float(cka), "se": se}


def main():
  rng = np.random.default_rng(17)
  cases = []
  # Correlated per-batch HSIC values around a CKA of about 0.6.
  for m in (30, 7, 2):
    z = rng.standard_normal((m, 3)) @ np.array([[1.0, 0.4, 0.3], [0.0, 0.8, 0.2],
                                                [0.0, 0.0, 0.7]])
    u = 2.0 + 0.3 * z[:, 1]
    v = 1.5 + 0.2 * z[:, 2]
    a = 1.05 + 0.25 * z[:, 0]
    cases.append(case(f"correlated_m{m}", a, u, v))
  # Values that are the same in every batch: no spread, SE 0.
  cases.append(case("constant", [0.5] * 5, [1.0] * 5, [2.0] * 5))
  # Large values with a small spread (cancellation in the raw sums).
  cases.append(case("large_offset", 1e3 + rng.standard_normal(40),
                    2e3 + rng.standard_normal(40), 1.5e3 + rng.standard_normal(40)))
  # No value: one batch, and a mean self term <= 0 (unbiased HSIC can be negative).
  cases.append(case("one_batch", [0.3], [1.0], [1.0]))
  cases.append(case("negative_self_term", [0.1, 0.2, -0.1], [-0.2, 0.1, -0.3], [1.0, 1.1, 0.9]))
  with open(os.path.join(OUT, "standard_error.json"), "w") as f:
    json.dump({"cases": cases}, f, separators=(",", ":"), allow_nan=False)
    f.write("\n")
  for c in cases:
    print(c["name"], c["cka"], c["se"])


if __name__ == "__main__":
  main()
