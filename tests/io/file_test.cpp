// Tests for io/file: mapping, checked reads, JSON errors with locations, atomic writes and their failure
// paths.
#include "io/file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "test_checks.h"
#include "test_util.h"

namespace fs = std::filesystem;
using iris::Error;
using namespace iris::io;

using iris::test::expect_error;
using iris::test::fresh_dir;

namespace {

std::vector<std::string> list_dir(const std::string& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(d)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST(MappedFile, MapsContent) {
  std::string d = fresh_dir("map");
  iris::test::write_file(d + "/a.bin", "hello mapped world");
  auto f = MappedFile::open(d + "/a.bin");
  ASSERT_EQ(f->size(), 18u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data()), f->size()), "hello mapped world");
  EXPECT_EQ(f->path(), d + "/a.bin");
}

TEST(MappedFile, WritesStayPrivate) {
  std::string d = fresh_dir("cow");
  iris::test::write_file(d + "/a.bin", "abcd");
  auto f = MappedFile::open(d + "/a.bin");
  f->mutable_data()[0] = 'X';  // copy-on-write: must neither fault nor reach the file
  EXPECT_EQ(f->data()[0], 'X');
  EXPECT_EQ(iris::test::read_file(d + "/a.bin"), "abcd");
}

TEST(MappedFile, EmptyFile) {
  std::string d = fresh_dir("empty");
  iris::test::write_file(d + "/e.bin", "");
  auto f = MappedFile::open(d + "/e.bin");
  EXPECT_EQ(f->size(), 0u);
}

TEST(MappedFile, Errors) {
  std::string d = fresh_dir("maperr");
  expect_error([&] { MappedFile::open(d + "/missing.bin"); }, {d + "/missing.bin", "No such file"});
  expect_error([&] { MappedFile::open(d); }, {d, "directory"});
  // A FIFO would block a plain open() forever; it must be refused at once.
  ASSERT_EQ(::mkfifo((d + "/fifo").c_str(), 0600), 0);
  expect_error([&] { MappedFile::open(d + "/fifo"); }, {"fifo", "not a regular file"});
  expect_error([&] { read_file(d + "/fifo"); }, {"fifo", "not a regular file"});
}

TEST(ReadFile, ReadsAndNamesMissing) {
  std::string d = fresh_dir("read");
  std::string big(300000, 'z');
  big[12345] = '\0';
  iris::test::write_file(d + "/big.bin", big);
  EXPECT_EQ(read_file(d + "/big.bin"), big);
  expect_error([&] { read_file(d + "/nope.txt"); }, {d + "/nope.txt"});
}

TEST(ReadJson, ParsesAndLocatesErrors) {
  std::string d = fresh_dir("json");
  iris::test::write_file(d + "/ok.json", R"({"a": [1, 2], "b": "x"})");
  auto j = read_json_file(d + "/ok.json");
  EXPECT_EQ(j["a"][1], 2);
  iris::test::write_file(d + "/bad.json", "{\n  \"a\": 1,\n  \"b\": tru\n}\n");
  expect_error([&] { read_json_file(d + "/bad.json"); },
               {"bad.json", "line 3, column 11", "invalid literal"});
  iris::test::write_file(d + "/empty.json", "");
  expect_error([&] { read_json_file(d + "/empty.json"); }, {"empty.json", "invalid JSON"});
  expect_error([&] { read_json_file(d + "/missing.json"); }, {"missing.json"});
  // Deep nesting neither overflows the stack while parsing nor while freeing.
  iris::test::write_file(d + "/deep.json", std::string(100000, '[') + std::string(100000, ']'));
  EXPECT_TRUE(read_json_file(d + "/deep.json").is_array());
}

TEST(AtomicWrite, CreatesAndReplaces) {
  std::string d = fresh_dir("atomic");
  write_file_atomic(d + "/out.txt", "first");
  EXPECT_EQ(iris::test::read_file(d + "/out.txt"), "first");
  write_file_atomic(d + "/out.txt", "second, longer");
  EXPECT_EQ(iris::test::read_file(d + "/out.txt"), "second, longer");
  write_file_atomic(d + "/out.txt", "");
  EXPECT_EQ(iris::test::read_file(d + "/out.txt"), "");
  EXPECT_EQ(list_dir(d), std::vector<std::string>{"out.txt"});  // no temp files left
}

TEST(AtomicWrite, RelativePath) {
  std::string d = fresh_dir("relative");
  std::string cwd = fs::current_path().string();
  fs::current_path(d);
  write_file_atomic("rel.txt", "relative");
  fs::current_path(cwd);
  EXPECT_EQ(iris::test::read_file(d + "/rel.txt"), "relative");
}

TEST(AtomicWrite, MissingFolderThrows) {
  std::string d = fresh_dir("nofolder");
  expect_error([&] { write_file_atomic(d + "/no/such/dir/f.txt", "x"); }, {d + "/no/such/dir/f.txt"});
  EXPECT_TRUE(list_dir(d).empty());
}

TEST(AtomicWrite, ReadOnlyFolderThrows) {
  std::string ro;
  std::string d = fresh_dir("readonly");
  if (::geteuid() != 0) {
    ro = d + "/ro";
    fs::create_directories(ro);
    ::chmod(ro.c_str(), 0555);
  } else {
    ro = "/sys";  // root ignores permission bits; sysfs refuses new files even to root
    int fd = ::open("/sys/iris_probe", O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd >= 0) {
      ::close(fd);
      ::unlink("/sys/iris_probe");
      GTEST_SKIP() << "no read-only folder available";
    }
  }
  auto before = list_dir(ro);
  expect_error([&] { write_file_atomic(ro + "/f.txt", "x"); }, {ro + "/f.txt", "temp file"});
  EXPECT_EQ(list_dir(ro), before);
  if (::geteuid() != 0) ::chmod(ro.c_str(), 0755);
}

TEST(AtomicWrite, UncommittedWriterLeavesTargetUntouched) {
  std::string d = fresh_dir("uncommitted");
  write_file_atomic(d + "/t.bin", "original");
  {
    AtomicFileWriter w(d + "/t.bin");
    w.write("replacement that never lands");
    EXPECT_TRUE(fs::exists(w.temp_path()));
    EXPECT_EQ(fs::path(w.temp_path()).parent_path(), fs::path(d));
  }  // destroyed without commit()
  EXPECT_EQ(iris::test::read_file(d + "/t.bin"), "original");
  EXPECT_EQ(list_dir(d), std::vector<std::string>{"t.bin"});

  AtomicFileWriter w(d + "/t.bin");
  w.write("also dropped");
  std::string tmp = w.temp_path();
  w.abort();
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_THROW(w.commit(), Error);
  EXPECT_EQ(iris::test::read_file(d + "/t.bin"), "original");
}

TEST(AtomicWrite, StreamsLargeAndSmallPieces) {
  std::string d = fresh_dir("stream");
  std::string expect;
  AtomicFileWriter w;
  w.open(d + "/s.bin");
  for (int i = 0; i < 1000; ++i) {
    std::string piece(size_t(i % 17), char('a' + i % 26));
    w.write(piece);
    expect += piece;
  }
  std::string big(3u << 20, 'B');  // larger than the internal buffer: goes straight through
  w.write(big.data(), big.size());
  expect += big;
  w.write("tail");
  expect += "tail";
  AtomicFileWriter moved = std::move(w);
  EXPECT_FALSE(w.is_open());
  EXPECT_EQ(moved.bytes_written(), expect.size());
  moved.commit();
  EXPECT_EQ(iris::test::read_file(d + "/s.bin"), expect);
  EXPECT_EQ(list_dir(d), std::vector<std::string>{"s.bin"});
}

// A real write failure: a file-size limit makes write() fail with EFBIG, as a full disk fails with ENOSPC.
TEST(AtomicWrite, WriteFailureKeepsOldFile) {
  std::string d = fresh_dir("efbig");
  write_file_atomic(d + "/keep.bin", "old content");
  struct rlimit old;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit lim = old;
  lim.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &lim), 0);
  std::string err;
  try {
    write_file_atomic(d + "/keep.bin", std::string(3u << 20, 'x'));
  } catch (const Error& e) {
    err = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(err.find("keep.bin"), std::string::npos) << err;
  EXPECT_EQ(iris::test::read_file(d + "/keep.bin"), "old content");
  EXPECT_EQ(list_dir(d), std::vector<std::string>{"keep.bin"});
}
