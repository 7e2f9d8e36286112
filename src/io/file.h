// Checked file access shared by the format readers and writers: a private (copy-on-write) memory map that
// tensors can keep alive, whole-file reads, JSON files with located parse errors, and atomic writes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "tensor/error.h"  // iris::Error, thrown by everything here

namespace iris::io {

// A whole file mapped into memory. Shared so that tensors borrowing from it keep the mapping alive.
// The pages are mapped private (copy-on-write): a caller writing into a borrowed tensor (e.g. fine-tuning
// in place) changes only its own copy of those pages, never the file, and does not fault.
class MappedFile {
 public:
  // Only regular files are accepted (a FIFO or device could block or never end). Errors name the path and
  // errno.
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint8_t* mutable_data() const { return data_; }  // copy-on-write pages; for borrowing into tensors
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  uint8_t* data_ = nullptr;  // null for an empty file (mmap rejects length 0)
  size_t size_ = 0;
  std::string path_;
};

// The whole content of a regular file. Errors name the path.
std::string read_file(const std::string& path);

// Parses a JSON file; errors name the file, the line and the column.
nlohmann::json read_json_file(const std::string& path);
// Parses JSON text; `name` (usually the file) is used in error messages.
nlohmann::json parse_json(std::string_view text, const std::string& name);

// Streams a file into place atomically: the data goes to a temp file in the destination folder, and commit()
// fsyncs it, renames it over `path` and fsyncs the folder. Until commit() succeeds an existing file at `path`
// is untouched; the destructor (or abort()) removes the temp file of an uncommitted writer.
class AtomicFileWriter {
 public:
  AtomicFileWriter() = default;
  explicit AtomicFileWriter(const std::string& path) { open(path); }
  ~AtomicFileWriter();
  AtomicFileWriter(AtomicFileWriter&& o) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& o) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void open(const std::string& path);  // throws naming the path when the temp file cannot be created
  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();  // flush, fsync, rename over the target, fsync the folder
  void abort();   // drop the temp file; the target stays as it was

  bool is_open() const { return fd_ >= 0; }
  uint64_t bytes_written() const { return written_; }
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_path_; }

 private:
  void flush();
  void write_fd(const void* data, size_t n);

  int fd_ = -1;
  std::string path_, temp_path_;
  std::string buf_;  // coalesces small writes (many small tensors) into few syscalls
  uint64_t written_ = 0;
};

// Writes data to path atomically (see AtomicFileWriter). On failure throws iris::Error and leaves any
// existing file at path untouched.
void write_file_atomic(const std::string& path, std::string_view data);

}  // namespace iris::io
