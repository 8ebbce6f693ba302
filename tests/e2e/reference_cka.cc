#include "reference_cka.h"

#include <cmath>

namespace cka::testing {

std::vector<double> ReferenceGram(const Activations& a) {
  std::vector<double> k(static_cast<size_t>(a.n) * a.n, 0.0);
  for (int i = 0; i < a.n; ++i) {
    for (int j = 0; j < a.n; ++j) {
      double sum = 0;
      for (int c = 0; c < a.d; ++c) sum += a.x[i * a.d + c] * a.x[j * a.d + c];
      k[i * a.n + j] = sum;
    }
  }
  return k;
}

double ReferenceHsicUnbiased(const std::vector<double>& k,
                             const std::vector<double>& l, int n) {
  auto kt = [&](int i, int j) { return i == j ? 0.0 : k[i * n + j]; };
  auto lt = [&](int i, int j) { return i == j ? 0.0 : l[i * n + j]; };
  double trace = 0, sum_k = 0, sum_l = 0, one_kl_one = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      trace += kt(i, j) * lt(j, i);
      sum_k += kt(i, j);
      sum_l += lt(i, j);
    }
  }
  // 1ᵀ K̃ L̃ 1 = Σ_j (Σ_i K̃_ij)(Σ_m L̃_jm)
  for (int j = 0; j < n; ++j) {
    double col_k = 0, row_l = 0;
    for (int i = 0; i < n; ++i) col_k += kt(i, j);
    for (int m = 0; m < n; ++m) row_l += lt(j, m);
    one_kl_one += col_k * row_l;
  }
  const double nn = n;
  return (trace + sum_k * sum_l / ((nn - 1) * (nn - 2)) -
          2.0 / (nn - 2) * one_kl_one) /
         (nn * (nn - 3));
}

namespace {

// Returns H·K·H with H = I − 11ᵀ/n.
std::vector<double> DoubleCentre(const std::vector<double>& k, int n) {
  std::vector<double> row_mean(n, 0), col_mean(n, 0);
  double all = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      row_mean[i] += k[i * n + j] / n;
      col_mean[j] += k[i * n + j] / n;
      all += k[i * n + j] / (static_cast<double>(n) * n);
    }
  }
  std::vector<double> out(k.size());
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j)
      out[i * n + j] = k[i * n + j] - row_mean[i] - col_mean[j] + all;
  }
  return out;
}

}  // namespace

double ReferenceHsicBiased(const std::vector<double>& k,
                           const std::vector<double>& l, int n) {
  const std::vector<double> hkh = DoubleCentre(k, n);
  const std::vector<double> hlh = DoubleCentre(l, n);
  // tr(KHLH) = tr(HKH·HLH) since H is idempotent; both are symmetric.
  double trace = 0;
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) trace += hkh[i * n + j] * hlh[j * n + i];
  }
  return trace / ((n - 1.0) * (n - 1.0));
}

double ReferenceMinibatchCka(const std::vector<ReferenceBatch>& batches,
                             const std::string& s, const std::string& t,
                             bool unbiased) {
  double st = 0, ss = 0, tt = 0;
  int common = 0;
  for (const ReferenceBatch& batch : batches) {
    auto a = batch.find(s);
    auto b = batch.find(t);
    if (a == batch.end() || b == batch.end()) continue;
    ++common;
    const int n = a->second.n;
    const std::vector<double> k = ReferenceGram(a->second);
    const std::vector<double> l = ReferenceGram(b->second);
    auto hsic = unbiased ? ReferenceHsicUnbiased : ReferenceHsicBiased;
    st += hsic(k, l, n);
    ss += hsic(k, k, n);
    tt += hsic(l, l, n);
  }
  if (common == 0 || ss <= 0 || tt <= 0) return std::nan("");
  return st / std::sqrt(ss * tt);
}

}  // namespace cka::testing
