#include "test_util.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace iris::test {

int run_command(const std::string& command, std::string* out) {
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int st = pclose(p);
  if (out) *out = std::move(text);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

std::string shared_dir() {
  const char* env = std::getenv("IRIS_SHARED_DIR");
  return env && *env ? env : IRIS_SHARED_DIR;
}

std::string source_dir() { return IRIS_SOURCE_DIR; }

namespace {
// The folder of temp_dir(): removed when the test process ends, unless a test failed or IRIS_KEEP_TEST_TMP is
// set (to look at what the tests wrote). Only the process that made it removes it (not a forked child).
struct TempDir {
  std::string path;
  pid_t owner = getpid();
  TempDir() {
    const auto base = std::filesystem::temp_directory_path() / ("iris_test_" + std::to_string(owner));
    std::filesystem::remove_all(base);
    std::filesystem::create_directories(base);
    path = base.string();
  }
  ~TempDir() {
    const char* keep = std::getenv("IRIS_KEEP_TEST_TMP");
    if (getpid() != owner || (keep && *keep) || !::testing::UnitTest::GetInstance()->Passed()) return;
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};
}  // namespace

std::string temp_dir() {
  static TempDir dir;
  return dir.path;
}

std::string fresh_dir(const std::string& name) {
  const std::string d = temp_dir() + "/" + name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f.write(data.data(), std::streamsize(data.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    m = std::max(m, d);
  }
  return m;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  return max_abs_diff(a.data(), b.data(), a.size());
}

}  // namespace iris::test
