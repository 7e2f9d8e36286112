// Atomic, self-validating training checkpoints with pruning (see checkpoint.h).
#include "train/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "io/file.h"

namespace iris::train {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "iris-train-checkpoint";
constexpr int kVersion = 1;
constexpr const char* kWeights = "weights.safetensors";
constexpr const char* kOptimizer = "optimizer.safetensors";
constexpr const char* kState = "state.json";
constexpr const char* kLatest = "latest";

std::atomic<uint64_t> g_tmp_counter{0};

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// "step-<digits>" exactly -> the step; anything else (temp folders, other files) -> nullopt.
std::optional<int64_t> parse_step_name(const std::string& name) {
  if (name.rfind("step-", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return std::nullopt;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

// Leftovers of an interrupted save: "<step name>.tmp-<pid>-<n>" or "<step name>.old-<pid>-<n>" folders, and
// AtomicFileWriter's ".latest.tmp-<pid>-..." files. Returns the pid that made them.
std::optional<long> leftover_pid(const std::string& name) {
  size_t p = std::string::npos;
  for (const char* tag : {".tmp-", ".old-"}) {
    size_t q = name.find(tag);
    if (q != std::string::npos) p = q + 5;
  }
  bool ours = name.rfind("step-", 0) == 0 || name.rfind(".latest.tmp-", 0) == 0;
  if (p == std::string::npos || !ours) return std::nullopt;
  char* end = nullptr;
  long pid = std::strtol(name.c_str() + p, &end, 10);
  if (end == name.c_str() + p || *end != '-') return std::nullopt;
  return pid;
}

// fsync of a folder, so that the renames inside it survive a power cut. Some file systems cannot (EINVAL).
void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(str_cat("cannot open folder ", dir, " to fsync it: ", std::strerror(errno)));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL && err != ENOTSUP)
    throw Error(str_cat("cannot fsync folder ", dir, ": ", std::strerror(err)));
}

// Moves the complete folder `tmp` to `dst`. An existing dst (a checkpoint of the same step from an earlier,
// interrupted run) is swapped out atomically with RENAME_EXCHANGE and then deleted, so that at every moment
// dst is a complete checkpoint.
void move_into_place(const std::string& tmp, const std::string& dst, const std::string& old_name) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dst, ec))) {
    if (::rename(tmp.c_str(), dst.c_str()) != 0)
      throw Error(str_cat("cannot rename ", tmp, " to ", dst, ": ", std::strerror(errno)));
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dst.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now holds the old folder
    return;
  }
  int err = errno;
  if (err != EINVAL && err != ENOSYS && err != ENOTSUP)
    throw Error(str_cat("cannot exchange ", tmp, " with ", dst, ": ", std::strerror(err)));
  // No RENAME_EXCHANGE on this file system: move the old folder aside first (a crash in between leaves the
  // older checkpoints, which latest_checkpoint falls back to).
  if (::rename(dst.c_str(), old_name.c_str()) != 0)
    throw Error(str_cat("cannot move ", dst, " aside to ", old_name, ": ", std::strerror(errno)));
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    err = errno;
    (void)::rename(old_name.c_str(), dst.c_str());
    throw Error(str_cat("cannot rename ", tmp, " to ", dst, ": ", std::strerror(err)));
  }
  fs::remove_all(old_name, ec);
}

bool process_alive(long pid) {
  return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM);
}

// Deletes checkpoints older than the newest `keep_last` complete ones (the one just written, `step`, counts
// as the first), incomplete step folders older than `step`, and leftovers of interrupted saves. Never throws:
// failing to delete an old checkpoint must not fail training.
void prune(const std::string& run_dir, int64_t step, int keep_last) {
  std::error_code ec;
  std::vector<std::pair<int64_t, std::string>> older;  // step folders before `step`
  std::vector<std::string> leftovers;
  for (fs::directory_iterator it(run_dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (auto s = parse_step_name(name)) {
      if (*s < step) older.emplace_back(*s, it->path().string());
    } else if (auto pid = leftover_pid(name)) {
      // Saves are synchronous: a leftover carrying our own pid is from an earlier process that had it.
      if (*pid == long(::getpid()) || !process_alive(*pid)) leftovers.push_back(it->path().string());
    }
  }
  for (const std::string& p : leftovers) fs::remove_all(p, ec);
  if (keep_last <= 0) return;
  std::sort(older.begin(), older.end(), std::greater<>());
  int kept = 1;  // the new checkpoint
  for (const auto& [s, path] : older) {
    if (kept < keep_last && is_complete_checkpoint(path)) {
      ++kept;
      continue;
    }
    fs::remove_all(path, ec);
  }
}

int64_t json_int(const nlohmann::json& j, const char* key, const std::string& file) {
  IRIS_CHECK(j.contains(key) && j[key].is_number_integer(), file, ": '", key, "' must be an integer");
  int64_t v = j[key].get<int64_t>();
  IRIS_CHECK(v >= 0, file, ": '", key, "' must be >= 0, got ", v);
  return v;
}

void save_impl(const std::string& run_dir, const TrainState& state, const io::NamedTensors& weights,
               const io::NamedTensors& optimizer_state, const std::string& optimizer_kind, int keep_last) {
  IRIS_CHECK(state.step >= 0, "save_checkpoint: step must be >= 0, got ", state.step);
  IRIS_CHECK(!run_dir.empty(), "save_checkpoint: empty run folder");
  const std::string name = checkpoint_name(state.step);
  const std::string context = str_cat("cannot save checkpoint ", name, " in ", run_dir, ": ");
  std::error_code ec;
  const bool created = fs::create_directories(run_dir, ec);
  if (ec || !fs::is_directory(run_dir))
    throw Error(str_cat(context, "cannot create the run folder: ", ec ? ec.message() : "not a folder"));
  if (created) {  // make the new folder's own entry durable too (best effort)
    try {
      fs::path abs = fs::absolute(run_dir);
      if (!abs.has_filename()) abs = abs.parent_path();  // "runs/x/" -> "runs/x"
      fsync_dir(abs.parent_path().string());
    } catch (const std::exception&) {
    }
  }

  const std::string suffix = str_cat(::getpid(), "-", g_tmp_counter.fetch_add(1));
  const std::string tmp = join(run_dir, str_cat(name, ".tmp-", suffix));
  const std::string dst = join(run_dir, name);
  fs::remove_all(tmp, ec);
  if (::mkdir(tmp.c_str(), 0777) != 0)
    throw Error(str_cat(context, "cannot create folder ", tmp, ": ", std::strerror(errno)));
  try {
    const std::string wpath = join(tmp, kWeights), opath = join(tmp, kOptimizer);
    io::save_safetensors(wpath, weights, {{"format", "pt"}});
    std::map<std::string, std::string> ometa{{"format", "pt"}};
    if (!optimizer_kind.empty()) ometa["optimizer"] = optimizer_kind;
    io::save_safetensors(opath, optimizer_state, ometa);

    nlohmann::json j;
    j["format"] = kFormat;
    j["version"] = kVersion;
    j["step"] = state.step;
    j["epoch"] = state.epoch;
    j["data_position"] = state.data_position;
    j["rng_seed"] = state.rng_seed;
    j["rng_state"] = state.rng_state;
    j["optimizer"] = optimizer_kind;
    j["files"] = {{kWeights, fs::file_size(wpath)}, {kOptimizer, fs::file_size(opath)}};
    j["extra"] = state.extra.is_null() ? nlohmann::json::object() : state.extra;
    io::write_file_atomic(join(tmp, kState), j.dump(1) + "\n");
    fsync_dir(tmp);
    move_into_place(tmp, dst, join(run_dir, str_cat(name, ".old-", suffix)));
    fsync_dir(run_dir);
  } catch (const std::exception& e) {
    fs::remove_all(tmp, ec);
    throw Error(context + e.what());
  }
  try {
    io::write_file_atomic(join(run_dir, kLatest), name + "\n");
  } catch (const std::exception& e) {
    // The new folder is complete; `latest` still names the previous one, which is complete too.
    throw Error(context + e.what());
  }
  prune(run_dir, state.step, keep_last);
}

}  // namespace

std::string checkpoint_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

void save_checkpoint(const std::string& run_dir, const TrainState& state, const io::NamedTensors& weights,
                     const Optimizer& optimizer, int keep_last) {
  save_impl(run_dir, state, weights, optimizer.state(), optimizer.config().kind, keep_last);
}

void save_checkpoint(const std::string& run_dir, const TrainState& state, const io::NamedTensors& weights,
                     const io::NamedTensors& optimizer_state, int keep_last) {
  save_impl(run_dir, state, weights, optimizer_state, "", keep_last);
}

std::optional<std::string> checkpoint_problem(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return str_cat(dir, " is not a folder");
  const std::string state_path = join(dir, kState);
  if (!fs::is_regular_file(state_path, ec)) return str_cat(kState, " is missing");
  nlohmann::json j;
  try {
    j = io::read_json_file(state_path);
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
  if (!j.is_object() || j.value("format", "") != kFormat)
    return str_cat(kState, " is not an iris training state");
  if (!j.contains("files") || !j["files"].is_object()) return str_cat(kState, " has no 'files'");
  for (const char* f : {kWeights, kOptimizer}) {
    const auto& files = j["files"];
    if (!files.contains(f) || !files[f].is_number_unsigned())
      return str_cat(kState, " does not list the size of ", f);
    const std::string path = join(dir, f);
    uint64_t expected = files[f].get<uint64_t>();
    if (!fs::is_regular_file(path, ec)) return str_cat(f, " is missing");
    const uint64_t have = uint64_t(fs::file_size(path, ec));
    if (ec) return str_cat(f, ": ", ec.message());
    if (have != expected)
      return str_cat(f, " has ", have, " bytes, ", kState, " says ", expected, " (truncated?)");
    try {
      io::SafetensorsFile::open(path);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  }
  return std::nullopt;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  for (fs::directory_iterator it(run_dir, ec), end; !ec && it != end; it.increment(ec)) {
    auto s = parse_step_name(it->path().filename().string());
    if (s && is_complete_checkpoint(it->path().string())) out.emplace_back(*s, it->path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return std::nullopt;
  const std::string latest = join(run_dir, kLatest);
  if (fs::is_regular_file(latest, ec) && fs::file_size(latest, ec) < 4096) {
    try {
      std::string name = io::read_file(latest);
      while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
      if (parse_step_name(name)) {
        std::string dir = join(run_dir, name);
        if (is_complete_checkpoint(dir)) return dir;
      }
    } catch (const std::exception&) {
      // unreadable: fall back to the scan
    }
  }
  auto all = list_checkpoints(run_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second;
}

LoadedCheckpoint load_checkpoint(const std::string& dir) {
  if (auto problem = checkpoint_problem(dir))
    throw Error(str_cat("checkpoint ", dir, " is incomplete or damaged: ", *problem));
  LoadedCheckpoint out;
  out.dir = dir;
  const std::string state_path = join(dir, kState);
  nlohmann::json j = io::read_json_file(state_path);
  try {
    IRIS_CHECK(j.value("version", 0) == kVersion, state_path, ": unsupported version ", j.value("version", 0),
               " (expected ", kVersion, ")");
    out.state.step = json_int(j, "step", state_path);
    out.state.epoch = json_int(j, "epoch", state_path);
    out.state.data_position = json_int(j, "data_position", state_path);
    IRIS_CHECK(j.contains("rng_seed") && j["rng_seed"].is_number_unsigned(), state_path,
               ": 'rng_seed' must be a non-negative integer");
    out.state.rng_seed = j["rng_seed"].get<uint64_t>();
    IRIS_CHECK(j.contains("rng_state") && j["rng_state"].is_string(), state_path,
               ": 'rng_state' must be a string");
    out.state.rng_state = j["rng_state"].get<std::string>();
    if (j.contains("extra")) out.state.extra = j["extra"];
    if (j.contains("optimizer") && j["optimizer"].is_string())
      out.optimizer_kind = j["optimizer"].get<std::string>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(state_path, ": ", e.what()));
  }
  for (auto [file, dst] : {std::pair{kWeights, &out.weights}, std::pair{kOptimizer, &out.optimizer}}) {
    auto f = io::SafetensorsFile::open(join(dir, file));
    for (const auto& [name, info] : f->tensors()) dst->emplace_back(name, f->get(info));
  }
  return out;
}

std::string rng_to_string(const std::mt19937_64& rng) {
  std::ostringstream os;
  os << rng;
  return os.str();
}

void rng_from_string(std::mt19937_64& rng, const std::string& text) {
  std::istringstream is(text);
  std::mt19937_64 r;
  is >> r;
  IRIS_CHECK(!is.fail(), "RNG state: malformed text (", text.size(), " characters)");
  rng = r;
}

}  // namespace iris::train
