#include "faulty_vfs.h"

#include <sqlite3.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace cka::testing {
namespace {

// The default VFS that every call is passed on to, with its own sqlite3_vfs
// (the unix VFS reads its pAppData in xOpen).
sqlite3_vfs* base_vfs = nullptr;

// A file of the faulty VFS: its own method table (the version of the wrapped
// file's), then the wrapped file, which SQLite allocates right behind it
// (szOsFile covers both).
struct FaultyFile {
  sqlite3_file base;
  sqlite3_io_methods methods;
  sqlite3_file* real;
};
constexpr size_t kFileHeader =
    (sizeof(FaultyFile) + alignof(std::max_align_t) - 1) /
    alignof(std::max_align_t) * alignof(std::max_align_t);

sqlite3_file* Real(sqlite3_file* file) {
  return reinterpret_cast<FaultyFile*>(file)->real;
}

int Close(sqlite3_file* file) {
  sqlite3_file* real = Real(file);
  return real->pMethods != nullptr ? real->pMethods->xClose(real) : SQLITE_OK;
}
int Read(sqlite3_file* file, void* out, int amount, sqlite3_int64 offset) {
  return Real(file)->pMethods->xRead(Real(file), out, amount, offset);
}
int Write(sqlite3_file* file, const void* data, int amount,
          sqlite3_int64 offset) {
  if (int rc = FaultyVfs::Get().Check(DiskOp::kWrite); rc != SQLITE_OK)
    return rc;
  return Real(file)->pMethods->xWrite(Real(file), data, amount, offset);
}
int Truncate(sqlite3_file* file, sqlite3_int64 size) {
  if (int rc = FaultyVfs::Get().Check(DiskOp::kTruncate); rc != SQLITE_OK)
    return rc;
  return Real(file)->pMethods->xTruncate(Real(file), size);
}
int Sync(sqlite3_file* file, int flags) {
  if (int rc = FaultyVfs::Get().Check(DiskOp::kSync); rc != SQLITE_OK)
    return rc;
  return Real(file)->pMethods->xSync(Real(file), flags);
}
int FileSize(sqlite3_file* file, sqlite3_int64* size) {
  return Real(file)->pMethods->xFileSize(Real(file), size);
}
int Lock(sqlite3_file* file, int level) {
  return Real(file)->pMethods->xLock(Real(file), level);
}
int Unlock(sqlite3_file* file, int level) {
  return Real(file)->pMethods->xUnlock(Real(file), level);
}
int CheckReservedLock(sqlite3_file* file, int* out) {
  return Real(file)->pMethods->xCheckReservedLock(Real(file), out);
}
int FileControl(sqlite3_file* file, int op, void* arg) {
  return Real(file)->pMethods->xFileControl(Real(file), op, arg);
}
int SectorSize(sqlite3_file* file) {
  return Real(file)->pMethods->xSectorSize(Real(file));
}
int DeviceCharacteristics(sqlite3_file* file) {
  return Real(file)->pMethods->xDeviceCharacteristics(Real(file));
}
int ShmMap(sqlite3_file* file, int region, int size, int extend,
           void volatile** out) {
  return Real(file)->pMethods->xShmMap(Real(file), region, size, extend, out);
}
int ShmLock(sqlite3_file* file, int offset, int n, int flags) {
  return Real(file)->pMethods->xShmLock(Real(file), offset, n, flags);
}
void ShmBarrier(sqlite3_file* file) {
  Real(file)->pMethods->xShmBarrier(Real(file));
}
int ShmUnmap(sqlite3_file* file, int delete_flag) {
  return Real(file)->pMethods->xShmUnmap(Real(file), delete_flag);
}
int Fetch(sqlite3_file* file, sqlite3_int64 offset, int amount, void** out) {
  return Real(file)->pMethods->xFetch(Real(file), offset, amount, out);
}
int Unfetch(sqlite3_file* file, sqlite3_int64 offset, void* p) {
  return Real(file)->pMethods->xUnfetch(Real(file), offset, p);
}

int Open(sqlite3_vfs* /*vfs*/, const char* name, sqlite3_file* file, int flags,
         int* out_flags) {
  FaultyFile* f = reinterpret_cast<FaultyFile*>(file);
  std::memset(f, 0, sizeof(FaultyFile));
  f->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(file) +
                                            kFileHeader);
  const int rc = base_vfs->xOpen(base_vfs, name, f->real, flags, out_flags);
  if (f->real->pMethods == nullptr) {
    // SQLite calls no method of a file whose pMethods is null.
    return rc;
  }
  const sqlite3_io_methods& real = *f->real->pMethods;
  sqlite3_io_methods& m = f->methods;
  m.iVersion = real.iVersion < 3 ? real.iVersion : 3;
  m.xClose = Close;
  m.xRead = Read;
  m.xWrite = Write;
  m.xTruncate = Truncate;
  m.xSync = Sync;
  m.xFileSize = FileSize;
  m.xLock = Lock;
  m.xUnlock = Unlock;
  m.xCheckReservedLock = CheckReservedLock;
  m.xFileControl = FileControl;
  m.xSectorSize = SectorSize;
  m.xDeviceCharacteristics = DeviceCharacteristics;
  if (m.iVersion >= 2) {
    m.xShmMap = ShmMap;
    m.xShmLock = ShmLock;
    m.xShmBarrier = ShmBarrier;
    m.xShmUnmap = ShmUnmap;
  }
  if (m.iVersion >= 3) {
    m.xFetch = Fetch;
    m.xUnfetch = Unfetch;
  }
  f->base.pMethods = &f->methods;
  return rc;
}

int Delete(sqlite3_vfs*, const char* name, int sync_dir) {
  return base_vfs->xDelete(base_vfs, name, sync_dir);
}
int Access(sqlite3_vfs*, const char* name, int flags, int* out) {
  return base_vfs->xAccess(base_vfs, name, flags, out);
}
int FullPathname(sqlite3_vfs*, const char* name, int size, char* out) {
  return base_vfs->xFullPathname(base_vfs, name, size, out);
}
void* DlOpen(sqlite3_vfs*, const char* name) {
  return base_vfs->xDlOpen(base_vfs, name);
}
void DlError(sqlite3_vfs*, int size, char* out) {
  base_vfs->xDlError(base_vfs, size, out);
}
void (*DlSym(sqlite3_vfs*, void* handle, const char* symbol))(void) {
  return base_vfs->xDlSym(base_vfs, handle, symbol);
}
void DlClose(sqlite3_vfs*, void* handle) {
  base_vfs->xDlClose(base_vfs, handle);
}
int Randomness(sqlite3_vfs*, int size, char* out) {
  return base_vfs->xRandomness(base_vfs, size, out);
}
int Sleep(sqlite3_vfs*, int microseconds) {
  return base_vfs->xSleep(base_vfs, microseconds);
}
int CurrentTime(sqlite3_vfs*, double* out) {
  return base_vfs->xCurrentTime(base_vfs, out);
}
// SQLite asks this for the system error behind an I/O error it got
// (sqlite3_system_errno): the injected one while a fault is armed.
int GetLastError(sqlite3_vfs*, int size, char* out) {
  const int err = FaultyVfs::Get().last_err();
  if (err != 0) return err;
  return base_vfs->xGetLastError(base_vfs, size, out);
}
int CurrentTimeInt64(sqlite3_vfs*, sqlite3_int64* out) {
  return base_vfs->xCurrentTimeInt64(base_vfs, out);
}

sqlite3_vfs faulty_vfs;

}  // namespace

FaultyVfs& FaultyVfs::Get() {
  static FaultyVfs* const instance = [] {
    sqlite3_initialize();
    base_vfs = sqlite3_vfs_find(nullptr);
    if (base_vfs == nullptr || base_vfs->iVersion < 2) std::abort();
    sqlite3_vfs& v = faulty_vfs;
    v.iVersion = 2;
    v.szOsFile = static_cast<int>(kFileHeader) + base_vfs->szOsFile;
    v.mxPathname = base_vfs->mxPathname;
    v.zName = kName;
    v.xOpen = Open;
    v.xDelete = Delete;
    v.xAccess = Access;
    v.xFullPathname = FullPathname;
    v.xDlOpen = DlOpen;
    v.xDlError = DlError;
    v.xDlSym = DlSym;
    v.xDlClose = DlClose;
    v.xRandomness = Randomness;
    v.xSleep = Sleep;
    v.xCurrentTime = CurrentTime;
    v.xGetLastError = GetLastError;
    v.xCurrentTimeInt64 = CurrentTimeInt64;
    if (sqlite3_vfs_register(&v, /*makeDflt=*/0) != SQLITE_OK) std::abort();
    return new FaultyVfs();
  }();
  return *instance;
}

void FaultyVfs::Arm(const DiskFault& fault) {
  armed_op_.store(-1);
  armed_code_.store(fault.sqlite_code);
  armed_err_.store(fault.err);
  armed_op_.store(static_cast<int>(fault.op));
}

void FaultyVfs::Disarm() {
  armed_op_.store(-1);
  last_err_.store(0);
}

int FaultyVfs::Check(DiskOp op) {
  if (armed_op_.load() != static_cast<int>(op)) return SQLITE_OK;
  const int code = armed_code_.load();
  if (code == SQLITE_OK) return SQLITE_OK;
  last_err_.store(armed_err_.load());
  ++injected_;
  return code;
}

}  // namespace cka::testing
