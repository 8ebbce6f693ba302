#include "server/file_state_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cka::server {
namespace {

namespace fs = std::filesystem;

// File layout, all integers little-endian:
//   [0, 8)   magic "CKASTATE"
//   [8, 12)  format version (kVersion)
//   [12, 16) zero
//   [16, 24) payload length in bytes
//   [24, 32) FNV-1a 64 of the payload
//   [32, …)  payload (Session::Serialize() bytes)
constexpr char kMagic[8] = {'C', 'K', 'A', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 32;
constexpr absl::string_view kSuffix = ".session";
constexpr absl::string_view kTempMarker = ".tmp.";

// This abseil build's string_view is its own type, not std::string_view (the
// StateStore interface's).
absl::string_view Absl(std::string_view s) {
  return absl::string_view(s.data(), s.size());
}

uint64_t Fnv1a64(absl::string_view bytes) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

void PutLittleEndian(uint64_t v, int bytes, std::string* out) {
  for (int i = 0; i < bytes; ++i)
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t GetLittleEndian(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v |= uint64_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

absl::Status IoError(absl::string_view what, const std::string& path, int err) {
  return absl::UnavailableError(
      absl::StrCat(what, " '", path, "': ", std::strerror(err)));
}

absl::Status WriteAll(int fd, absl::string_view bytes,
                      const std::string& path) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError("cannot write", path, errno);
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status FsyncDir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open directory", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return IoError("cannot fsync directory", dir, err);
  return absl::OkStatus();
}

bool IsLowerHex(absl::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileStateStore>> FileStateStore::Open(
    const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("--data-dir: empty path");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "--data-dir '", dir, "': cannot create directory: ", ec.message()));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::UnavailableError(
        absl::StrCat("--data-dir '", dir, "': not a directory"));
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return IoError("--data-dir not writable", dir, errno);
  }
  const std::string lock_path = absl::StrCat(dir, "/LOCK");
  const int lock_fd =
      ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0) return IoError("cannot open", lock_path, errno);
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(lock_fd);
    if (err == EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("--data-dir '", dir, "' is in use by another ckad (",
                       lock_path, " is locked)"));
    }
    return IoError("cannot lock", lock_path, err);
  }
  // A temporary file is a Put that a crash interrupted before its rename; the
  // previous state (if any) is still in place, so the partial file is garbage.
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code ignored;
    if (absl::StrContains(name, kTempMarker)) fs::remove(it->path(), ignored);
  }
  if (ec) {
    ::close(lock_fd);
    return absl::UnavailableError(
        absl::StrCat("--data-dir '", dir, "': cannot list: ", ec.message()));
  }
  return std::unique_ptr<FileStateStore>(new FileStateStore(dir, lock_fd));
}

FileStateStore::~FileStateStore() { ::close(lock_fd_); }

std::string FileStateStore::PathFor(std::string_view session_id) const {
  return absl::StrCat(dir_, "/", absl::BytesToHexString(Absl(session_id)),
                      kSuffix);
}

absl::Status FileStateStore::Put(std::string_view session_id,
                                 std::string_view state) {
  absl::MutexLock lock(&mu_);
  const std::string path = PathFor(session_id);
  const absl::string_view payload = Absl(state);
  const std::string temp =
      absl::StrCat(path, kTempMarker, ::getpid(), ".", temp_counter_++);

  std::string header(kMagic, sizeof(kMagic));
  PutLittleEndian(kVersion, 4, &header);
  PutLittleEndian(0, 4, &header);
  PutLittleEndian(payload.size(), 8, &header);
  PutLittleEndian(Fnv1a64(payload), 8, &header);

  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return IoError("cannot create", temp, errno);
  absl::Status status = WriteAll(fd, header, temp);
  if (status.ok()) status = WriteAll(fd, payload, temp);
  if (status.ok() && ::fsync(fd) != 0)
    status = IoError("cannot fsync", temp, errno);
  if (::close(fd) != 0 && status.ok())
    status = IoError("cannot close", temp, errno);
  if (status.ok() && ::rename(temp.c_str(), path.c_str()) != 0) {
    status = IoError("cannot rename onto", path, errno);
  }
  if (!status.ok()) {
    ::unlink(temp.c_str());
    return status;
  }
  return FsyncDir(dir_);
}

absl::StatusOr<std::string> FileStateStore::Get(
    std::string_view session_id) const {
  absl::MutexLock lock(&mu_);
  const std::string path = PathFor(session_id);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("no stored state for session '", Absl(session_id), "'"));
    }
    return IoError("cannot open", path, errno);
  }
  std::string bytes;
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return IoError("cannot read", path, err);
    }
    if (n == 0) break;
    bytes.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);

  auto damaged = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("session file '", path,
                                            "' of session '", Absl(session_id),
                                            "' is damaged: ", why));
  };
  if (bytes.size() < kHeaderBytes) {
    return damaged(absl::StrCat(bytes.size(), " bytes, shorter than the ",
                                kHeaderBytes, "-byte header"));
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    return damaged("bad magic; not a ckad session file");
  }
  const uint64_t version = GetLittleEndian(bytes.data() + 8, 4);
  if (version != kVersion) {
    return damaged(
        absl::StrCat("format version ", version, ", expected ", kVersion));
  }
  const uint64_t length = GetLittleEndian(bytes.data() + 16, 8);
  const uint64_t checksum = GetLittleEndian(bytes.data() + 24, 8);
  if (length != bytes.size() - kHeaderBytes) {
    return damaged(absl::StrCat("header says ", length,
                                " payload bytes, file has ",
                                bytes.size() - kHeaderBytes));
  }
  std::string payload = bytes.substr(kHeaderBytes);
  if (Fnv1a64(payload) != checksum) return damaged("checksum mismatch");
  return payload;
}

absl::Status FileStateStore::Delete(std::string_view session_id) {
  absl::MutexLock lock(&mu_);
  const std::string path = PathFor(session_id);
  if (::unlink(path.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return IoError("cannot remove", path, errno);
  }
  return FsyncDir(dir_);
}

absl::StatusOr<std::vector<std::string>> FileStateStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  std::error_code ec;
  for (fs::directory_iterator it(dir_, ec), end; !ec && it != end;
       it.increment(ec)) {
    const fs::directory_entry& entry = *it;
    const std::string name = entry.path().filename().string();
    if (!absl::EndsWith(name, kSuffix) || absl::StrContains(name, kTempMarker))
      continue;
    const absl::string_view hex =
        absl::string_view(name).substr(0, name.size() - kSuffix.size());
    if (hex.empty() || hex.size() % 2 != 0 || !IsLowerHex(hex)) {
      return absl::DataLossError(
          absl::StrCat("session file '", entry.path().string(),
                       "': name is not a hex-encoded session id"));
    }
    ids.push_back(absl::HexStringToBytes(hex));
  }
  if (ec) return IoError("cannot list", dir_, ec.value());
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace cka::server
