// Where serialised session state is kept. The engine writes
// Session::Serialize() bytes through this interface; the server provides a
// durable implementation.
#ifndef CKA_CORE_STATE_STORE_H_
#define CKA_CORE_STATE_STORE_H_

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace cka::core {

// A key-value store of session id → state bytes. Implementations must be
// thread-safe.
class StateStore {
 public:
  virtual ~StateStore() = default;
  // Stores `state` for `session_id`, replacing what was there.
  virtual absl::Status Put(std::string_view session_id,
                           std::string_view state) = 0;
  // Returns the state of `session_id`, or NotFound.
  virtual absl::StatusOr<std::string> Get(
      std::string_view session_id) const = 0;
  // Removes `session_id`; OK when it was absent.
  virtual absl::Status Delete(std::string_view session_id) = 0;
  // Returns every stored session id, sorted.
  virtual absl::StatusOr<std::vector<std::string>> List() const = 0;
};

// A StateStore in memory, for tests and for servers without a data directory.
// Thread-safe.
class MemoryStateStore : public StateStore {
 public:
  absl::Status Put(std::string_view session_id,
                   std::string_view state) override;
  absl::StatusOr<std::string> Get(std::string_view session_id) const override;
  absl::Status Delete(std::string_view session_id) override;
  absl::StatusOr<std::vector<std::string>> List() const override;

 private:
  mutable absl::Mutex mu_;
  std::map<std::string, std::string, std::less<>> states_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cka::core

#endif  // CKA_CORE_STATE_STORE_H_
