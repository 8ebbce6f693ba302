// SessionState's helpers: growing the sums, their sizes, the join buffer's
// bookkeeping (session_state.h).
#include "session_state.h"

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace cka::core {

void PairSums::Resize(int s) {
  if (s <= size) return;
  auto grow = [&](auto& v) {
    std::remove_reference_t<decltype(v)> grown(static_cast<size_t>(s) * s);
    for (int i = 0; i < size; ++i)
      std::copy_n(v.data() + i * size, size, grown.data() + i * s);
    v.swap(grown);
  };
  for (std::vector<double>* v :
       {&num, &self, &num_sq, &self_sq, &num_self, &self_prod}) {
    grow(*v);
  }
  grow(count);
  size = s;
}

int64_t PairSums::bytes() const {
  return static_cast<int64_t>(num.size() * sizeof(double) * 6 +
                              count.size() * sizeof(int64_t));
}

int64_t AppliedBytes(size_t batch_id_bytes, size_t streams) {
  return static_cast<int64_t>(2 * batch_id_bytes + 4 * streams +
                              sizeof(AppliedBatch) + 2 * sizeof(std::string) +
                              64);
}

int64_t SessionState::AppliedBytesTotal() const {
  int64_t total = 0;
  for (const auto& [id, record] : applied)
    total += AppliedBytes(id.size(), record.streams.size());
  return total;
}

int64_t ExactSums::bytes() const {
  return static_cast<int64_t>((xx.size() + x.size() + aa.size() + ax.size()) *
                              sizeof(double));
}

int64_t PendingBatch::bytes() const {
  size_t b = 0;
  for (const auto& blocks : kernels) {
    for (const SharedDoubles& block : blocks)
      b += block->size() * sizeof(double);
  }
  for (const auto& s : self) b += s.size() * sizeof(double);
  for (const auto& a : activations) b += a->size() * sizeof(double);
  return static_cast<int64_t>(b);
}

int SessionState::AddStream(const std::string& name, int64_t width) {
  const int index = static_cast<int>(streams.size());
  streams.push_back(name);
  stream_index.emplace(name, index);
  widths.push_back(width);
  return index;
}

void SessionState::DropPending(const std::string& batch_id) {
  auto it = pending.find(batch_id);
  if (it == pending.end()) return;
  dirty.insert(PendingKey(batch_id));
  pending_bytes -= it->second.bytes();
  pending_order.erase(it->second.seq);
  pending.erase(it);
}

int64_t SessionState::BucketSumsBytes() const {
  int64_t b = 0;
  for (const auto& measure : buckets) {
    for (const auto& [key, sums] : measure) b += sums.bytes();
  }
  return b;
}

int64_t SessionState::SumsBytes() const {
  return exact.bytes() + BucketSumsBytes();
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

int64_t BucketOf(const SessionConfig& config, int64_t step) {
  return config.step_bucket == 0 ? 0 : FloorDiv(step, config.step_bucket);
}

int64_t ExactBytes(int64_t dim, int64_t streams) {
  const double d = static_cast<double>(dim), s = static_cast<double>(streams);
  const double bytes = 8.0 * (d * d + s * d + d + s * s);
  return bytes >= 9.2e18 ? INT64_MAX : static_cast<int64_t>(bytes);
}

bool HasExact(const SessionConfig& config) {
  return std::any_of(config.measures.begin(), config.measures.end(),
                     [](const Measure& m) { return IsExact(m.estimator); });
}

std::vector<int> MinibatchMeasures(const SessionConfig& config) {
  std::vector<int> out;
  for (size_t i = 0; i < config.measures.size(); ++i) {
    if (!IsExact(config.measures[i].estimator))
      out.push_back(static_cast<int>(i));
  }
  return out;
}

}  // namespace cka::core
