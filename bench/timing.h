// Timing helpers shared by the benchmarks: a steady clock and the median of
// repeated measurements (steadier than a mean on a shared machine; both sides
// of every ratio use it).
#ifndef CKA_BENCH_TIMING_H_
#define CKA_BENCH_TIMING_H_

#include <algorithm>
#include <chrono>
#include <vector>

namespace cka::bench {

using Clock = std::chrono::steady_clock;

// Returns the seconds from `a` to `b`.
inline double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Returns the median of `v` (not empty).
inline double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 == 1 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace cka::bench

#endif  // CKA_BENCH_TIMING_H_
