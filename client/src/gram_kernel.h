// The Gram K = X·Xᵀ of a layer's activations, for the streamer's client-side
// reduction. Included by gram.cc, and by gram_avx2.cc and gram_avx512.cc,
// which compile it once more with wider instruction sets, each under its own
// name for Eigen's namespace.
#ifndef CKA_CLIENT_SRC_GRAM_KERNEL_H_
#define CKA_CLIENT_SRC_GRAM_KERNEL_H_

#include <Eigen/Core>
#include <cstdint>
#include <type_traits>

#include "gram.h"

namespace cka::client::internal {
// Unnamed: each file that includes this has its own copies, compiled with its
// own instruction set, which the linker must not merge.
namespace {

// K of the n × d row-major matrix at `data`, accumulated in Accumulator
// precision (float: straight into `out`), written to `out` as n × n float32,
// exactly symmetric.
template <typename Scalar, typename Accumulator>
void GramOf(const void* data, int64_t n, int64_t d, float* out) {
  using Rows =
      Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const Rows> x(static_cast<const Scalar*>(data), n, d);
  Eigen::Map<Eigen::MatrixXf> k(out, n, n);
  if constexpr (std::is_same_v<Accumulator, float>) {
    k.setZero();
    if constexpr (std::is_same_v<Scalar, float>) {
      k.selfadjointView<Eigen::Lower>().rankUpdate(x);
    } else {
      k.selfadjointView<Eigen::Lower>().rankUpdate(x.template cast<float>());
    }
    k.triangularView<Eigen::StrictlyUpper>() = k.transpose();
  } else {
    static_assert(std::is_same_v<Scalar, Accumulator>);
    using AccMatrix =
        Eigen::Matrix<Accumulator, Eigen::Dynamic, Eigen::Dynamic>;
    AccMatrix acc = AccMatrix::Zero(n, n);
    acc.template selfadjointView<Eigen::Lower>().rankUpdate(x);
    acc.template triangularView<Eigen::StrictlyUpper>() = acc.transpose();
    k = acc.template cast<float>();
  }
}

void GramOfType(GramInput in, float* out) {
  switch (in.type) {
    case GramInput::Type::kFloat64:
      return GramOf<double, double>(in.data, in.n, in.d, out);
    case GramInput::Type::kFloat16:
      return GramOf<Eigen::half, float>(in.data, in.n, in.d, out);
    case GramInput::Type::kBFloat16:
      return GramOf<Eigen::bfloat16, float>(in.data, in.n, in.d, out);
    case GramInput::Type::kFloat32:
      return GramOf<float, float>(in.data, in.n, in.d, out);
  }
}

}  // namespace
}  // namespace cka::client::internal

#endif  // CKA_CLIENT_SRC_GRAM_KERNEL_H_
