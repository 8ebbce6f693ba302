#include "server/auth.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace cka::server {
namespace {

// Returns true when a == b, reading every byte of the longer one whatever the
// contents, so that the time does not tell how much of a guess was right.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
  }
  return diff == 0;
}

std::optional<Role> RoleFromName(absl::string_view name) {
  if (name == "reader") return Role::kReader;
  if (name == "writer") return Role::kWriter;
  if (name == "admin") return Role::kAdmin;
  return std::nullopt;
}

bool IsPrintableToken(absl::string_view token) {
  return std::all_of(token.begin(), token.end(),
                     [](char c) { return c > ' ' && c < 0x7f; });
}

}  // namespace

const char* RoleName(Role role) {
  switch (role) {
    case Role::kReader:
      return "reader";
    case Role::kWriter:
      return "writer";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::StatusOr<TokenTable> TokenTable::Parse(std::string_view text,
                                             std::string_view origin) {
  TokenTable table;
  const absl::string_view where(origin.data(), origin.size());
  int line_number = 0;
  for (absl::string_view line :
       absl::StrSplit(absl::string_view(text.data(), text.size()), '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ":", line_number, ": expected 'token role', got ",
                       fields.size(), " fields"));
    }
    const std::optional<Role> role = RoleFromName(fields[1]);
    if (!role.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ":", line_number, ": unknown role '", fields[1],
                       "'; expected reader, writer or admin"));
    }
    const absl::string_view token = fields[0];
    if (token.size() < kMinTokenLength) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ":", line_number, ": the token has ", token.size(),
          " characters; use at least ", kMinTokenLength));
    }
    if (!IsPrintableToken(token)) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ":", line_number,
                       ": the token has a character outside printable ASCII"));
    }
    if (table.Find(std::string_view(token.data(), token.size())).has_value()) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ":", line_number, ": the token is given a second time"));
    }
    table.entries_.push_back(Entry{std::string(token), *role});
  }
  if (table.entries_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        ": no tokens; expected lines of 'token role' (an empty table "
        "would refuse every call)"));
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int error = errno;
    const std::string message =
        absl::StrCat(path, ": cannot read: ", std::strerror(error));
    return error == EACCES ? absl::PermissionDeniedError(message)
                           : absl::NotFoundError(message);
  }
  std::ostringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

std::optional<int> TokenTable::Find(std::string_view token) const {
  std::optional<int> found;
  for (size_t i = 0; i < entries_.size(); ++i) {
    // No early exit: the time does not depend on which entry matches.
    if (ConstantTimeEquals(entries_[i].token, token))
      found = static_cast<int>(i);
  }
  return found;
}

absl::StatusOr<Caller> Authorize(const TokenTable& tokens,
                                 std::optional<std::string_view> authorization,
                                 Role role, std::string_view method) {
  const absl::string_view name(method.data(), method.size());
  if (!authorization.has_value()) {
    return absl::UnauthenticatedError(
        absl::StrCat(name,
                     ": no 'authorization' header; send 'authorization: Bearer "
                     "<token>' with a token of --auth-tokens"));
  }
  constexpr std::string_view kScheme = "Bearer ";
  if (authorization->size() <= kScheme.size() ||
      !absl::EqualsIgnoreCase(
          absl::string_view(authorization->data(), kScheme.size()),
          absl::string_view(kScheme.data(), kScheme.size()))) {
    return absl::UnauthenticatedError(absl::StrCat(
        name, ": the 'authorization' header is not 'Bearer <token>'"));
  }
  const std::optional<int> index =
      tokens.Find(authorization->substr(kScheme.size()));
  if (!index.has_value()) {
    return absl::UnauthenticatedError(
        absl::StrCat(name, ": unknown bearer token"));
  }
  const Caller caller{*index, tokens.role(*index)};
  if (static_cast<int>(caller.role) < static_cast<int>(role)) {
    return absl::PermissionDeniedError(absl::StrCat(
        name, " needs the role ", RoleName(role),
        " or higher; this token has the role ", RoleName(caller.role)));
  }
  return caller;
}

}  // namespace cka::server
