// Helpers shared by the command-line tests: running the iris binary and reading what a training run wrote.
#pragma once
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "test_util.h"

namespace iris::test {

// Exit status and output (stdout + stderr) of `iris ARGS`, run from a shell with `env_prefix` in front (for
// example "env -u IRIS_MODEL").
struct CliResult {
  int code;
  std::string out;
};

inline CliResult iris_cli(const std::string& args, const std::string& env_prefix = "") {
  CliResult r{-1, ""};
  r.code = run_command((env_prefix.empty() ? "" : env_prefix + " ") + IRIS_BINARY + " " + args, &r.out);
  return r;
}

// Like iris_cli, returning the exit status and storing the output in *out (if given).
inline int run_iris(const std::string& args, std::string* out = nullptr, const std::string& env_prefix = "") {
  CliResult r = iris_cli(args, env_prefix);
  if (out) *out = std::move(r.out);
  return r.code;
}

// Expects a failure (status 1, "iris: error:") with the given hint in the message, and no crash.
inline void expect_cli_error(const CliResult& r, const std::string& hint) {
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("iris: error:"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(hint), std::string::npos) << "wanted '" << hint << "' in: " << r.out;
}

// The "loss" of every line of a run folder's metrics.jsonl.
inline std::vector<double> run_losses(const std::string& run_dir) {
  std::vector<double> r;
  std::ifstream in(run_dir + "/metrics.jsonl");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) r.push_back(nlohmann::json::parse(line)["loss"].get<double>());
  return r;
}

}  // namespace iris::test
