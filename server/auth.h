// Bearer-token authentication and roles of ckad (--auth-tokens).
#ifndef CKA_SERVER_AUTH_H_
#define CKA_SERVER_AUTH_H_

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace cka::server {

// What a token may do. Each role may do everything the roles before it may:
// a reader gets, lists, queries and watches; a writer also creates sessions
// and streams activations; an admin also deletes sessions.
enum class Role { kReader = 0, kWriter = 1, kAdmin = 2 };

// Returns "reader", "writer" or "admin".
const char* RoleName(Role role);

// The tokens ckad accepts and their roles. Immutable after Parse/Load, so
// thread-safe. Never logs or prints a token.
class TokenTable {
 public:
  // Shortest token accepted: a shorter one is guessable.
  static constexpr size_t kMinTokenLength = 16;

  // Returns the table of `text`: one "token role" per line (role one of
  // reader, writer, admin), separated by spaces or tabs; blank lines and lines
  // whose first non-blank character is '#' are ignored. InvalidArgument naming
  // `origin` and the line number (never the token) for a line without exactly
  // two fields, an unknown role, a token shorter than kMinTokenLength or with
  // a character outside printable ASCII, a token given twice, or a text
  // without any token.
  static absl::StatusOr<TokenTable> Parse(std::string_view text,
                                          std::string_view origin);
  // Reads `path` and parses it (origin: the path). NotFound or
  // PermissionDenied when it cannot be read.
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // Returns the index of `token` in the table (a stable id of the caller that
  // is not the token), or nullopt. Takes the same time whether and where the
  // token matches: every entry is compared, each in constant time.
  std::optional<int> Find(std::string_view token) const;
  // Returns the role of the entry Find returned.
  Role role(int index) const { return entries_[index].role; }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string token;
    Role role;
  };
  std::vector<Entry> entries_;
};

// The caller of an authorised call.
struct Caller {
  int token_index = -1;  // in the TokenTable
  Role role = Role::kReader;
};

// Checks the "authorization" header of a call to `method` that needs `role`.
// `authorization` is the header's value, nullopt when absent. Returns the
// caller; Unauthenticated when the header is absent, not "Bearer <token>", or
// the token is unknown; PermissionDenied naming the method, the role it needs
// and the caller's role when the role is too low. Thread-safe.
absl::StatusOr<Caller> Authorize(const TokenTable& tokens,
                                 std::optional<std::string_view> authorization,
                                 Role role, std::string_view method);

}  // namespace cka::server

#endif  // CKA_SERVER_AUTH_H_
