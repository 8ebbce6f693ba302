// A test-only SQLite VFS that wraps the default one and makes chosen file
// operations fail on demand, as a full or failing disk would: the disk faults
// under ckad's SQLite store (server/sqlite_state_store.h), injected below
// SQLite so that SQLite's own error handling runs as it would in production.
#ifndef CKA_TESTS_DURABILITY_FAULTY_VFS_H_
#define CKA_TESTS_DURABILITY_FAULTY_VFS_H_

#include <atomic>
#include <cstdint>

namespace cka::testing {

// The file operations a fault can be armed on.
enum class DiskOp { kWrite, kSync, kTruncate };

// A disk fault: the SQLite result code the operation returns (SQLITE_FULL,
// SQLITE_IOERR_WRITE, SQLITE_IOERR_FSYNC, SQLITE_IOERR_TRUNCATE) and the
// system error it stands for (ENOSPC, EIO), which the VFS's xGetLastError
// reports where SQLite asks (SQLite 3.40 does not, for a failed COMMIT).
struct DiskFault {
  DiskOp op = DiskOp::kWrite;
  int sqlite_code = 0;
  int err = 0;
};

// The VFS "ckad-faulty". Every file SQLite opens through it (database, WAL,
// journals) goes through the default VFS, except that an armed operation
// fails without touching the file. Registered once per process, never as the
// default VFS. Thread-safe: faults are armed and counted atomically, and
// SQLite may call the VFS from any thread.
class FaultyVfs {
 public:
  static constexpr char kName[] = "ckad-faulty";

  // Registers the VFS on first use; returns the process's instance.
  static FaultyVfs& Get();

  // Makes every later `fault.op`, on any file, fail with the fault until
  // Disarm. One fault is armed at a time; arming replaces the previous one.
  void Arm(const DiskFault& fault);
  // Lets every operation through again.
  void Disarm();
  // Returns the number of operations failed so far.
  int64_t injected() const { return injected_.load(); }

  // What the VFS callbacks use (in faulty_vfs.cc).
  // Returns the result code for `op` now: SQLITE_OK, or the armed fault's
  // code (counted, and its errno kept for xGetLastError).
  int Check(DiskOp op);
  int last_err() const { return last_err_.load(); }

 private:
  FaultyVfs() = default;

  std::atomic<int> armed_op_{-1};  // a DiskOp, or -1 for none
  std::atomic<int> armed_code_{0};
  std::atomic<int> armed_err_{0};
  std::atomic<int> last_err_{0};
  std::atomic<int64_t> injected_{0};
};

}  // namespace cka::testing

#endif  // CKA_TESTS_DURABILITY_FAULTY_VFS_H_
