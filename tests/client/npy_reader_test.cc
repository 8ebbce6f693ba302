#include "npy_reader.h"

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace cka::client {
namespace {

// Returns the bytes of a .npy file of format `major`.0 with header dict `dict`
// and `data`, padded as numpy pads it (total header a multiple of 64, ending in
// '\n').
std::string NpyBytes(int major, const std::string& dict,
                     const std::string& data) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  const size_t len = header.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>((len >> 8) & 0xff));
  if (major != 1) {
    out.push_back(static_cast<char>((len >> 16) & 0xff));
    out.push_back(static_cast<char>((len >> 24) & 0xff));
  }
  return out + header + data;
}

template <typename T>
std::string Raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()),
                     values.size() * sizeof(T));
}

TEST(NpyReaderTest, ReadsVersion1Float32Matrix) {
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  const std::string bytes =
      NpyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
               Raw(values));
  absl::StatusOr<NpyArray> array = ParseNpy(bytes);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyArray::DType::kFloat32);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(array->data, Raw(values));
}

TEST(NpyReaderTest, ReadsVersion2Float64Rank3) {
  const std::vector<double> values = {0.5, -1.5, 2.25, 3, 4, 5, 6, 7};
  const std::string bytes = NpyBytes(
      2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2, 2), }",
      Raw(values));
  absl::StatusOr<NpyArray> array = ParseNpy(bytes);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyArray::DType::kFloat64);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{2, 2, 2}));
  EXPECT_EQ(array->data, Raw(values));
}

TEST(NpyReaderTest, ReadsFloat16AndKeysInAnyOrder) {
  const std::vector<uint16_t> values = {0x3c00, 0x4000, 0xc000,
                                        0x0000};  // 1, 2, -2, 0
  const std::string bytes =
      NpyBytes(1, "{'shape': (4, 1), 'fortran_order': False, 'descr': '<f2'}",
               Raw(values));
  absl::StatusOr<NpyArray> array = ParseNpy(bytes);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->dtype, NpyArray::DType::kFloat16);
  EXPECT_EQ(array->shape, (std::vector<int64_t>{4, 1}));
  EXPECT_EQ(array->data, Raw(values));
}

TEST(NpyReaderTest, ReadsOneDimensionalShapeWithTrailingComma) {
  const std::vector<float> values = {1, 2, 3};
  absl::StatusOr<NpyArray> array = ParseNpy(
      NpyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }",
               Raw(values)));
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->shape, (std::vector<int64_t>{3}));
}

struct BadNpyCase {
  const char* name;
  std::string bytes;
  const char* expected_in_message;
};

class NpyReaderRejectsTest : public testing::TestWithParam<BadNpyCase> {};

TEST_P(NpyReaderRejectsTest, WithInvalidArgumentNamingTheProblem) {
  absl::StatusOr<NpyArray> array = ParseNpy(GetParam().bytes, "x.npy");
  ASSERT_FALSE(array.ok());
  EXPECT_EQ(array.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(array.status().message().find(GetParam().expected_in_message),
            std::string::npos)
      << array.status();
  EXPECT_NE(array.status().message().find("x.npy"), std::string::npos)
      << array.status();
}

const std::string kFourFloats = Raw(std::vector<float>{1, 2, 3, 4});

INSTANTIATE_TEST_SUITE_P(
    Cases, NpyReaderRejectsTest,
    testing::Values(
        BadNpyCase{"BadMagic", "PK\x03\x04 not numpy at all", "bad magic"},
        BadNpyCase{
            "Version3",
            NpyBytes(
                3,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                kFourFloats),
            "version 3.0"},
        BadNpyCase{
            "FortranOrder",
            NpyBytes(
                1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                kFourFloats),
            "fortran_order"},
        BadNpyCase{
            "BigEndian",
            NpyBytes(
                1,
                "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }",
                kFourFloats),
            "'>f4'"},
        BadNpyCase{
            "Integers",
            NpyBytes(
                1,
                "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }",
                kFourFloats),
            "'<i4'"},
        BadNpyCase{
            "TruncatedData",
            NpyBytes(
                1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                kFourFloats),
            "needs 24 data bytes, the file has 16"},
        BadNpyCase{"MissingShape",
                   NpyBytes(1, "{'descr': '<f4', 'fortran_order': False}",
                            kFourFloats),
                   "'shape'"},
        BadNpyCase{"HeaderPastEnd",
                   std::string("\x93NUMPY\x01\x00\xff\x00{'descr'", 17),
                   "runs past the end"}),
    [](const testing::TestParamInfo<BadNpyCase>& info) {
      return info.param.name;
    });

TEST(NpyReaderTest, ReadsAFileAndReportsAMissingOne) {
  const std::string path = testing::TempDir() + "/npy_reader_test.npy";
  const std::vector<float> values = {1, 2, 3, 4};
  {
    std::ofstream out(path, std::ios::binary);
    out << NpyBytes(
        1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
        Raw(values));
  }
  absl::StatusOr<NpyArray> array = ReadNpyFile(path);
  ASSERT_TRUE(array.ok()) << array.status();
  EXPECT_EQ(array->data, Raw(values));
  absl::StatusOr<NpyArray> missing = ReadNpyFile(path + ".absent");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace cka::client
