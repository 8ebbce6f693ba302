#!/usr/bin/python3
"""Generates data/measures.json: the comparison family (CCA, SVCCA, PWCCA, linear regression,
orthogonal Procrustes) computed by an independent float64 numpy oracle from the raw activations.

Run with Debian's python3-numpy (the pyenv python3 on PATH has no numpy):

    /usr/bin/python3 tests/core/data/make_measures.py

Everything is seeded, so a rerun writes a byte-identical file. ckad computes these measures from
running second moments (eigendecompositions of Cxx, Cyy); the oracle below never forms a moment
matrix: it works on the centred data with SVDs, least squares (numpy.linalg.lstsq) and the
Procrustes rotation itself, following core/MATH.md ("Comparison family from second moments").

The rank rule in data terms: a singular value s of the centred X is kept when
s^2 > max(1e-10 * s_max^2, 1e-12 * max_j sum_r x_rj^2), the same rule core applies to the
eigenvalues of Cxx (whose eigenvalues are the s^2).

File format:
  tolerance: not here; the C++ test states its own.
  transforms: {q: dx*dx orthogonal, a: dx*dx invertible, scale} for the invariance tests of
              the case named "full_rank" (row-major, applied as X @ q, X @ a, scale * X).
  cases: [{name, n, dx, dy, x: n*dx row-major, y: n*dy row-major,
           expected: {measure: value or null}, errors: {measure: "FAILED_PRECONDITION"}}]
  measures: cca_r2, cca_mean_rho, cca_rank_x, cca_rank_y, cca_forced_unit, svcca, svcca_kept_x,
            svcca_kept_y, pwcca, regression_xy (X predicts Y), regression_yx, procrustes.
"""

import json
import os

import numpy as np

OUT = os.path.dirname(os.path.abspath(__file__))
RANK_TOLERANCE = 1e-10
CANCELLATION_FLOOR = 1e-12
SVCCA_SHARE = 0.99
PWCCA_COINCIDENT = 1e-6


# --------------------------------------------------------------------------------------------
# The oracle, float64, from the activations.
# --------------------------------------------------------------------------------------------


class Undefined(Exception):
  pass


def kept_basis(x):
  """Left singular vectors (N x r) and singular values (all) of the centred x, by the rank rule."""
  xc = x - x.mean(axis=0)
  u, s, _ = np.linalg.svd(xc, full_matrices=False)
  floor = CANCELLATION_FLOOR * np.max(np.sum(x * x, axis=0))
  zero = max(RANK_TOLERANCE * s[0] ** 2, floor)
  r = int(np.sum(s**2 > zero))
  if r == 0:
    raise Undefined()
  return xc, u[:, :r], s


def cca(x, y):
  _, ux, _ = kept_basis(x)
  _, uy, _ = kept_basis(y)
  rho = np.linalg.svd(ux.T @ uy, compute_uv=False)
  p = min(ux.shape[1], uy.shape[1])
  assert len(rho) == p
  forced = max(0, ux.shape[1] + uy.shape[1] - (x.shape[0] - 1))
  return {"cca_r2": np.sum(rho**2) / p, "cca_mean_rho": np.sum(rho) / p,
          "cca_rank_x": ux.shape[1], "cca_rank_y": uy.shape[1], "cca_forced_unit": forced}


def svcca_kept(s, r):
  share = np.cumsum(s**2) / np.sum(s**2)
  # The test data keep clear of the boundary, so rounding cannot move k.
  assert np.min(np.abs(share - SVCCA_SHARE)) > 1e-6, share
  return min(int(np.argmax(share >= SVCCA_SHARE)) + 1, r)


def svcca(x, y):
  _, ux, sx = kept_basis(x)
  _, uy, sy = kept_basis(y)
  k = svcca_kept(sx, ux.shape[1])
  m = svcca_kept(sy, uy.shape[1])
  rho = np.linalg.svd(ux[:, :k].T @ uy[:, :m], compute_uv=False)
  return {"svcca": np.sum(rho) / min(k, m), "svcca_kept_x": k, "svcca_kept_y": m}


def pwcca(x, y):
  xc, ux, _ = kept_basis(x)
  yc, uy, _ = kept_basis(y)
  a, rho, bt = np.linalg.svd(ux.T @ uy, full_matrices=False)
  if ux.shape[1] <= uy.shape[1]:
    h, z = ux @ a, xc  # canonical variates of X (N x p), unit norm
  else:
    h, z = uy @ bt.T, yc
  assert np.allclose(np.linalg.norm(h, axis=0), 1.0)
  proj = h.T @ z  # p x d: <h_i, z_j>
  # Runs of coinciding correlations (neighbours within PWCCA_COINCIDENT) share the weight
  # sum_j ||<H_c, z_j>||_2, whatever basis of their span the SVD returned; for a run of one it
  # is the paper's sum_j |<h_i, z_j>| (core/MATH.md, "PWCCA").
  alpha = np.empty(len(rho))
  begin = 0
  while begin < len(rho):
    end = begin + 1
    while end < len(rho) and rho[end - 1] - rho[end] <= PWCCA_COINCIDENT:
      end += 1
    alpha[begin:end] = np.sum(np.linalg.norm(proj[begin:end], axis=0)) / (end - begin)
    begin = end
  return {"pwcca": np.sum(alpha * rho) / np.sum(alpha)}


def regression(x, y):
  """R^2 of the least-squares fit of y from x (with intercept)."""
  kept_basis(y)  # raises when y has no variance
  xc = x - x.mean(axis=0)
  yc = y - y.mean(axis=0)
  try:
    kept_basis(x)
  except Undefined:
    return 0.0  # a predictor without variance explains nothing
  # rcond in singular values: s <= 1e-5 s_max is s^2 <= 1e-10 s_max^2. The data leave a wide
  # gap around it, and the one column the cancellation floor is for is exactly 0 here.
  b = np.linalg.lstsq(xc, yc, rcond=np.sqrt(RANK_TOLERANCE))[0]
  return 1.0 - np.sum((yc - xc @ b) ** 2) / np.sum(yc**2)


def procrustes(x, y):
  kept_basis(x)
  kept_basis(y)
  xn = x - x.mean(axis=0)
  yn = y - y.mean(axis=0)
  xn = xn / np.linalg.norm(xn)
  yn = yn / np.linalg.norm(yn)
  w = max(xn.shape[1], yn.shape[1])
  xn = np.pad(xn, ((0, 0), (0, w - xn.shape[1])))
  yn = np.pad(yn, ((0, 0), (0, w - yn.shape[1])))
  u, _, vt = np.linalg.svd(xn.T @ yn)
  q = u @ vt  # the rotation minimising ||xn q - yn||_F
  d2 = np.sum((xn @ q - yn) ** 2)
  return 1.0 - d2 / 2.0


def expected(x, y):
  out, errors = {}, {}
  for names, f in [(("cca_r2", "cca_mean_rho", "cca_rank_x", "cca_rank_y", "cca_forced_unit"),
                    lambda: cca(x, y)),
                   (("svcca", "svcca_kept_x", "svcca_kept_y"), lambda: svcca(x, y)),
                   (("pwcca",), lambda: pwcca(x, y)),
                   (("regression_xy",), lambda: {"regression_xy": regression(x, y)}),
                   (("regression_yx",), lambda: {"regression_yx": regression(y, x)}),
                   (("procrustes",), lambda: {"procrustes": procrustes(x, y)})]:
    try:
      values = f()
      for name in names:
        out[name] = float(values[name])
    except Undefined:
      for name in names:
        out[name] = None
        errors[name] = "FAILED_PRECONDITION"
  return out, errors


# --------------------------------------------------------------------------------------------
# The cases.
# --------------------------------------------------------------------------------------------


def correlated(rng, n, dx, dy, noise=0.5):
  """X and a nonlinear, noisy function of it, on columns of different scales."""
  x = rng.standard_normal((n, dx)) @ np.diag(rng.uniform(0.5, 3.0, dx))
  y = np.tanh(x @ rng.standard_normal((dx, dy))) + noise * rng.standard_normal((n, dy))
  return x + rng.uniform(-1, 1, dx), y + rng.uniform(-1, 1, dy)


def case(name, x, y):
  exp, errors = expected(x, y)
  n, dx = x.shape
  return {"name": name, "n": n, "dx": dx, "dy": y.shape[1], "x": x.ravel().tolist(),
          "y": y.ravel().tolist(), "expected": exp, "errors": errors}


def main():
  rng = np.random.default_rng(20261206)
  cases = []
  x, y = correlated(rng, 60, 5, 7)
  cases.append(case("full_rank", x, y))
  x, y = correlated(rng, 50, 3, 12)
  cases.append(case("narrow_x_wide_y", x, y))
  # Rank 4 of 6: a duplicated column and one that is a combination of two others.
  x, y = correlated(rng, 40, 4, 5)
  x = np.column_stack([x, x[:, 1], 2.0 * x[:, 0] - 0.5 * x[:, 2]])
  cases.append(case("duplicated_columns", x, y))
  # Wider than the rows: rank N - 1 = 19 on X; Y of 4 columns. Every rho is 1 (forced).
  x, y = correlated(rng, 20, 30, 4)
  cases.append(case("wider_than_rows", x, y))
  # Both wider than the rows.
  x = rng.standard_normal((16, 24))
  y = x[:, :20] @ rng.standard_normal((20, 22)) + rng.standard_normal((16, 22))
  cases.append(case("both_wider_than_rows", x, y))
  # Means far above the spread: centring raw sums must cancel them.
  x, y = correlated(rng, 60, 4, 4)
  cases.append(case("large_means", x + 1e3, y - 5e2))
  # One column constant at a value whose square is not exact in float64: its centred variance
  # from raw sums is rounding (about 1e-3 when summed row by row in order), far above
  # 1e-10 * lambda_max; only the cancellation floor tells it from signal.
  x, y = correlated(rng, 60, 4, 3)
  x = np.column_stack([x, np.full(60, 98765.4321)])
  cases.append(case("constant_column", x, y))
  # No variance at all on X: constants, and zeros.
  _, y = correlated(rng, 30, 3, 3)
  cases.append(case("constant_x", np.tile([3.7, -1.25, 1.0e4], (30, 1)), y))
  cases.append(case("zero_x", np.zeros((30, 2)), y))
  cases.append(case("constant_y", y, np.tile([2.5, 0.0], (30, 1))))
  # Two canonical correlations equal to 1 (Y holds two combinations of X's columns), three
  # below: PWCCA's weights of the two are not unique (its own generator keeps the earlier
  # cases' draws unchanged).
  other = np.random.default_rng(20261207)
  x, y = correlated(other, 60, 5, 3)
  y = np.column_stack([2.0 * x[:, 0] - x[:, 1], x[:, 1] + 0.5, y])
  cases.append(case("coinciding_correlations", x, y))

  # Transforms of "full_rank"'s X for the invariance tests.
  dx = cases[0]["dx"]
  q, _ = np.linalg.qr(rng.standard_normal((dx, dx)))
  a = rng.standard_normal((dx, dx)) + 2.0 * np.eye(dx)
  assert np.linalg.cond(a) < 50
  transforms = {"q": q.ravel().tolist(), "a": a.ravel().tolist(), "scale": 3.5}

  path = os.path.join(OUT, "measures.json")
  with open(path, "w") as f:
    json.dump({"transforms": transforms, "cases": cases}, f, separators=(",", ":"),
              allow_nan=False)
    f.write("\n")
  for c in cases:
    print(c["name"], {k: (round(v, 6) if isinstance(v, float) else v)
                      for k, v in c["expected"].items()})


if __name__ == "__main__":
  main()
