// Checked file access: mmap, whole-file reads, JSON files and atomic writes (POSIX).
#include "io/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <system_error>

#include "tensor/error.h"

namespace iris::io {

namespace {

std::string errno_text(int err) {
  return std::system_category().message(err);
}

// Opens a regular file for reading. O_NONBLOCK so that a FIFO cannot block the open; it is rejected right
// after.
int open_regular(const std::string& path, struct stat& st) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    int err = errno;
    throw Error(str_cat("cannot open ", path, ": ", errno_text(err)));
  }
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(str_cat("cannot stat ", path, ": ", errno_text(err)));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(
        str_cat("cannot read ", path, ": ", S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file"));
  }
  return fd;
}

std::string folder_of(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  return dir.empty() ? "." : dir;
}

}  // namespace

// ---- MappedFile ----

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  struct stat st;
  int fd = open_regular(path, st);
  std::shared_ptr<MappedFile> f(new MappedFile());
  f->path_ = path;
  f->size_ = size_t(st.st_size);
  if (f->size_ > 0) {
    // MAP_NORESERVE: a private writable mapping of a 100+ GB checkpoint must not be charged as committed
    // memory.
    void* p = ::mmap(nullptr, f->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
    if (p == MAP_FAILED && errno == ENOMEM)  // strict overcommit accounting: fall back to a read-only mapping
      p = ::mmap(nullptr, f->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      ::close(fd);
      throw Error(str_cat("cannot map ", path, " (", f->size_, " bytes): ", errno_text(err)));
    }
    f->data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid without the descriptor
  return f;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

// ---- reading ----

std::string read_file(const std::string& path) {
  struct stat st;
  int fd = open_regular(path, st);
  std::string out;
  out.reserve(size_t(st.st_size));
  // Read to EOF rather than trusting st_size: some regular files (/proc) report 0.
  char buf[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      ::close(fd);
      throw Error(str_cat("cannot read ", path, ": ", errno_text(err)));
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  ::close(fd);
  return out;
}

nlohmann::json parse_json(std::string_view text, const std::string& name) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann locates the error after the last character it read (often the next line's column 0); name the
    // character itself instead, 1-based, which is where an editor should jump.
    size_t pos = std::min(e.byte > 0 ? size_t(e.byte - 1) : size_t(0), text.size());
    size_t line_start = text.rfind('\n', pos == 0 ? std::string_view::npos : pos - 1);
    line_start = line_start == std::string_view::npos ? 0 : line_start + 1;
    size_t line = 1 + size_t(std::count(text.begin(), text.begin() + std::ptrdiff_t(line_start), '\n'));
    std::string msg = e.what();
    if (size_t p = msg.find(": "); msg.find("parse error") != std::string::npos && p != std::string::npos)
      msg.erase(0, p + 2);  // drop "[json.exception.parse_error.101] parse error at line L, column C"
    throw Error(str_cat(name, ": invalid JSON at line ", line, ", column ", pos - line_start + 1, ": ", msg));
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(name, ": invalid JSON: ", e.what()));
  }
}

nlohmann::json read_json_file(const std::string& path) {
  return parse_json(read_file(path), path);
}

// ---- AtomicFileWriter ----

namespace {
constexpr size_t kWriteBuffer = size_t(1) << 20;
std::atomic<uint64_t> temp_counter{0};
}  // namespace

AtomicFileWriter::~AtomicFileWriter() {
  abort();
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& o) noexcept {
  *this = std::move(o);
}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& o) noexcept {
  if (this != &o) {
    abort();
    fd_ = o.fd_;
    path_ = std::move(o.path_);
    temp_path_ = std::move(o.temp_path_);
    buf_ = std::move(o.buf_);
    written_ = o.written_;
    o.fd_ = -1;
    o.temp_path_.clear();
  }
  return *this;
}

void AtomicFileWriter::open(const std::string& path) {
  abort();
  IRIS_CHECK(!path.empty(), "atomic write: empty path");
  std::string dir = folder_of(path);
  std::string base = std::filesystem::path(path).filename().string();
  IRIS_CHECK(!base.empty(), "cannot write ", path, ": the path names a folder");
  // A unique hidden name in the same folder, so that rename() is atomic (same file system). O_EXCL guards
  // races; mode 0666 lets the umask decide the final permissions, as for a plainly created file.
  uint64_t salt = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  for (int attempt = 0;; ++attempt) {
    std::string tmp = str_cat(dir, "/.", base, ".tmp-", ::getpid(), "-", temp_counter.fetch_add(1), "-",
                              (salt + uint64_t(attempt)) % 1000000007u);
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd >= 0) {
      fd_ = fd;
      temp_path_ = tmp;
      break;
    }
    int err = errno;
    if (err == EEXIST && attempt < 100) continue;
    throw Error(
        str_cat("cannot write ", path, ": cannot create a temp file in ", dir, ": ", errno_text(err)));
  }
  path_ = path;
  written_ = 0;
  buf_.clear();
}

void AtomicFileWriter::write_fd(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t r = ::write(fd_, p, n);
    if (r < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      throw Error(str_cat("cannot write ", path_, " (temp file ", temp_path_, "): ", errno_text(err)));
    }
    p += r;
    n -= size_t(r);
  }
}

void AtomicFileWriter::flush() {
  if (buf_.empty()) return;
  std::string pending;
  pending.swap(buf_);  // cleared even when the write throws, so a failed writer never retries stale bytes
  write_fd(pending.data(), pending.size());
}

void AtomicFileWriter::write(const void* data, size_t n) {
  IRIS_CHECK(fd_ >= 0, "atomic write: writer is not open", path_.empty() ? "" : " for ", path_);
  if (n == 0) return;
  try {
    if (buf_.size() + n <= kWriteBuffer) {
      if (buf_.capacity() < kWriteBuffer) buf_.reserve(kWriteBuffer);
      buf_.append(static_cast<const char*>(data), n);
    } else {
      flush();
      write_fd(data, n);  // large blocks (tensor data) go straight to the file
    }
  } catch (...) {
    abort();  // a partial temp file must never be committed
    throw;
  }
  written_ += n;
}

void AtomicFileWriter::commit() {
  IRIS_CHECK(fd_ >= 0, "atomic write: commit without an open writer", path_.empty() ? "" : " for ", path_);
  try {
    flush();
    if (::fsync(fd_) != 0)
      throw Error(str_cat("cannot write ", path_, ": fsync of ", temp_path_, " failed: ", errno_text(errno)));
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0)  // NFS and friends report deferred write errors here
      throw Error(str_cat("cannot write ", path_, ": close of ", temp_path_, " failed: ", errno_text(errno)));
    if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
      throw Error(
          str_cat("cannot write ", path_, ": rename from ", temp_path_, " failed: ", errno_text(errno)));
  } catch (...) {
    abort();
    throw;
  }
  temp_path_.clear();
  // Make the rename itself durable. Some file systems cannot fsync a folder (EINVAL); the data is safe
  // anyway.
  std::string dir = folder_of(path_);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    int rc = ::fsync(dfd);
    int err = errno;
    ::close(dfd);
    if (rc != 0 && err != EINVAL && err != ENOTSUP)
      throw Error(str_cat("wrote ", path_, " but could not fsync its folder ", dir, ": ", errno_text(err)));
  }
}

void AtomicFileWriter::abort() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    temp_path_.clear();
  }
  buf_.clear();
}

void write_file_atomic(const std::string& path, std::string_view data) {
  AtomicFileWriter w(path);
  w.write(data);
  w.commit();
}

}  // namespace iris::io
