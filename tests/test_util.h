// Helpers shared by the tests: where the shared reference files are, and array comparisons.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace iris::test {

std::string shared_dir();   // the shared/ folder with refcases/ and tokenizers/
std::string source_dir();   // the repository root
std::string temp_dir();     // a fresh empty folder for this test process, removed at its end if every test passed
std::string fresh_dir(const std::string& name);  // temp_dir()/name, emptied (or made) now
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& data);
// Runs a shell command line with stderr joined to stdout; returns its exit status (128 + signal when killed) and
// stores the output in *out (if given). -1 when it cannot be started.
int run_command(const std::string& command, std::string* out = nullptr);

// Largest |a[i] - b[i]|; sizes must match.
double max_abs_diff(const float* a, const float* b, size_t n);
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace iris::test
