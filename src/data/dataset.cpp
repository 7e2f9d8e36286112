// Reading LLaVA conversation JSON/JSONL and image-caption JSONL into Samples, with skip counting.
#include "data/dataset.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>

#include "data/rng.h"
#include "io/file.h"

namespace iris::data {

// ---- report ----

int64_t LoadReport::total_skipped() const {
  int64_t n = 0;
  for (const auto& [reason, count] : skipped) n += count;
  return n;
}

int64_t LoadReport::skipped_for(const std::string& reason) const {
  auto it = skipped.find(reason);
  return it == skipped.end() ? 0 : it->second;
}

void LoadReport::merge(const LoadReport& other) {
  loaded += other.loaded;
  for (const auto& [reason, count] : other.skipped) skipped[reason] += count;
  truncated += other.truncated;
  boundary_adjusted += other.boundary_adjusted;
  for (const std::string& w : other.warnings)
    if (warnings.size() < kMaxWarnings) warnings.push_back(w);
}

std::string LoadReport::summary() const {
  std::string s = str_cat("loaded ", loaded, ", skipped ", total_skipped());
  if (!skipped.empty()) {
    s += " (";
    bool first = true;
    for (const auto& [reason, count] : skipped) {
      s += str_cat(first ? "" : ", ", reason, " ", count);
      first = false;
    }
    s += ")";
  }
  if (truncated) s += str_cat(", truncated ", truncated);
  if (boundary_adjusted) s += str_cat(", token boundaries adjusted ", boundary_adjusted);
  return s;
}

namespace {

std::mutex g_sink_mutex;
WarningSink g_sink = [](const std::string& msg) { std::fprintf(stderr, "iris: warning: %s\n", msg.c_str()); };

void emit(const std::string& msg) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  if (g_sink) g_sink(msg);
}

}  // namespace

void set_warning_sink(WarningSink sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = std::move(sink);
}

void report_warning(LoadReport* report, const std::string& message, bool emit_it) {
  if (report) {
    if (report->warnings.size() >= LoadReport::kMaxWarnings) return;
    report->warnings.push_back(message);
    if (report->warnings.size() == LoadReport::kMaxWarnings) {
      if (emit_it) emit(message + " (further warnings are counted, not printed)");
      return;
    }
  }
  if (emit_it) emit(message);
}

void report_skip(LoadReport* report, const std::string& reason, const std::string& message, bool emit_it) {
  if (report) report->skipped[reason]++;
  report_warning(report, str_cat("skipped ", message), emit_it);
}

// ---- parsing ----

namespace {

using json = nlohmann::json;

constexpr std::string_view kImageMarker = "<image>";

std::string strip(std::string_view s) {
  const char* ws = " \t\n\r\f\v";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  size_t e = s.find_last_not_of(ws);
  return std::string(s.substr(b, e - b + 1));
}

// Counts and removes "<image>" markers; the text of a turn that had any is stripped (LLaVA moves the marker to
// the front of the turn and strips the rest).
int take_image_markers(std::string& text) {
  int n = 0;
  std::string out;
  size_t pos = 0;
  for (size_t at; (at = text.find(kImageMarker, pos)) != std::string::npos; pos = at + kImageMarker.size()) {
    out.append(text, pos, at - pos);
    ++n;
  }
  if (n == 0) return 0;
  out.append(text, pos);
  text = strip(out);
  return n;
}

// A JSON value for a message, cut to a readable length.
std::string brief(const json& j) {
  std::string s = j.dump();
  return s.size() > 120 ? s.substr(0, 117) + "..." : s;
}

std::string id_of(const json& j, const std::string& fallback) {
  if (!j.is_object() || !j.contains("id")) return fallback;
  const json& id = j["id"];
  if (id.is_string()) return id.get<std::string>();
  if (id.is_number_integer() || id.is_number_unsigned()) return id.dump();
  return fallback;
}

std::string role_of(const std::string& from) {
  std::string r;
  for (char c : from) r += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (r == "human" || r == "user") return "user";
  if (r == "gpt" || r == "assistant") return "assistant";
  if (r == "system") return "system";
  return "";
}

Sample sample_from_llava(const json& j, const std::string& where) {
  using namespace skip_reason;
  if (!j.is_object()) throw DataError(kMalformed, str_cat(where, ": expected a JSON object, got ", j.type_name()));
  Sample s;
  s.id = id_of(j, "");
  if (j.contains("image") && !j["image"].is_null()) {
    const json& im = j["image"];
    if (im.is_string()) {
      s.image_paths.push_back(im.get<std::string>());
    } else if (im.is_array()) {
      for (const json& p : im) {
        if (!p.is_string())
          throw DataError(kMalformed, str_cat(where, ": \"image\" must hold strings, got ", p.type_name()));
        s.image_paths.push_back(p.get<std::string>());
      }
    } else {
      throw DataError(kMalformed,
                      str_cat(where, ": \"image\" must be a path or a list of paths, got ", im.type_name()));
    }
    for (const std::string& p : s.image_paths)
      if (p.empty()) throw DataError(kMalformed, str_cat(where, ": an empty image path"));
  }
  if (!j.contains("conversations") || !j["conversations"].is_array())
    throw DataError(kMalformed, str_cat(where, ": no \"conversations\" list"));
  int markers = 0;
  bool has_assistant = false;
  for (const json& t : j["conversations"]) {
    if (!t.is_object() || !t.contains("from") || !t["from"].is_string() || !t.contains("value") ||
        !t["value"].is_string())
      throw DataError(kMalformed, str_cat(where, ": each turn needs string \"from\" and \"value\", got ", brief(t)));
    Turn turn;
    turn.role = role_of(t["from"].get<std::string>());
    if (turn.role.empty())
      throw DataError(kMalformed, str_cat(where, ": unknown role \"", t["from"].get<std::string>(),
                                          "\" (expected human, gpt, system, user or assistant)"));
    turn.text = t["value"].get<std::string>();
    turn.n_images = take_image_markers(turn.text);
    if (turn.n_images > 0 && turn.role == "assistant")
      throw DataError(kImageMismatch, str_cat(where, ": <image> in an assistant turn"));
    markers += turn.n_images;
    has_assistant = has_assistant || turn.role == "assistant";
    s.turns.push_back(std::move(turn));
  }
  // Assistant turns before the first user turn answer nothing: LLaVA's preprocessing drops them too.
  for (size_t i = 0; i < s.turns.size() && s.turns[i].role != "user";) {
    if (s.turns[i].role == "assistant")
      s.turns.erase(s.turns.begin() + long(i));
    else
      ++i;
  }
  has_assistant = std::any_of(s.turns.begin(), s.turns.end(), [](const Turn& t) { return t.role == "assistant"; });
  if (!has_assistant) throw DataError(kNoAssistant, str_cat(where, ": no assistant (gpt) turn"));
  const int n_images = int(s.image_paths.size());
  if (markers == 0 && n_images > 0) {
    // No marker: the images go before the first user turn's text, as LLaVA's data always places them.
    for (Turn& t : s.turns)
      if (t.role == "user") {
        t.n_images = n_images;
        markers = n_images;
        break;
      }
  }
  if (markers != n_images)
    throw DataError(kImageMismatch,
                    str_cat(where, ": ", markers, " <image> marker(s) but ", n_images, " image(s) listed"));
  return s;
}

std::string describe(const std::string& where, const std::string& id) {
  return id.empty() ? where : str_cat(where, " (id \"", id, "\")");
}

// Runs parse for one item: counts and skips a DataError, or rethrows it as iris::Error in strict mode.
template <typename Fn>
void guarded(LoadReport* report, bool strict, Fn&& parse) {
  try {
    parse();
    if (report) report->loaded++;
  } catch (const DataError& e) {
    if (strict) throw iris::Error(e.what());
    report_skip(report, e.reason(), e.what());
  }
}

bool starts_as_array(const std::string& text) {
  size_t i = text.find_first_not_of(" \t\r\n");
  if (i != std::string::npos && text.compare(i, 3, "\xEF\xBB\xBF") == 0) i = text.find_first_not_of(" \t\r\n", i + 3);
  return i != std::string::npos && text[i] == '[';
}

// Calls fn(line_number, line) for each non-blank line.
template <typename Fn>
void for_each_line(const std::string& text, Fn&& fn) {
  size_t pos = 0;
  int64_t line = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    ++line;
    std::string_view l(text.data() + pos, nl - pos);
    if (line == 1 && l.substr(0, 3) == "\xEF\xBB\xBF") l.remove_prefix(3);  // UTF-8 byte-order mark
    if (l.find_first_not_of(" \t\r") != std::string_view::npos) fn(line, l);
    pos = nl + 1;
  }
}

json parse_line(std::string_view line, const std::string& where) {
  try {
    return json::parse(line);
  } catch (const json::exception& e) {
    throw DataError(skip_reason::kMalformed, str_cat(where, ": not valid JSON (", e.what(), ")"));
  }
}

}  // namespace

std::vector<Sample> load_llava_json(const std::string& path, LoadReport* report, bool strict) {
  const std::string text = io::read_file(path);
  std::vector<Sample> out;
  if (starts_as_array(text)) {
    json arr = io::parse_json(text, path);  // a broken array cannot be salvaged: iris::Error with line/column
    IRIS_CHECK(arr.is_array(), path, ": expected a JSON array of conversations");
    for (size_t i = 0; i < arr.size(); ++i) {
      const std::string where = describe(str_cat(path, ": entry ", i), id_of(arr[i], ""));
      guarded(report, strict, [&] {
        Sample s = sample_from_llava(arr[i], where);
        if (s.id.empty()) s.id = std::to_string(i);
        out.push_back(std::move(s));
      });
      arr[i] = nullptr;  // release as we go: conversation files can be large
    }
    return out;
  }
  for_each_line(text, [&](int64_t line, std::string_view l) {
    std::string where = str_cat(path, ":", line);
    guarded(report, strict, [&] {
      json j = parse_line(l, where);
      where = describe(where, id_of(j, ""));
      Sample s = sample_from_llava(j, where);
      if (s.id.empty()) s.id = str_cat("line ", line);
      out.push_back(std::move(s));
    });
  });
  return out;
}

std::string resolve_image_path(const std::string& image_dir, const std::string& path) {
  namespace fs = std::filesystem;
  return fs::path(path).is_absolute() || image_dir.empty() ? path : (fs::path(image_dir) / path).string();
}

const std::vector<std::string>& caption_prompts() {
  static const std::vector<std::string> prompts = {
      "Describe the image briefly.",
      "Write a short caption for this image.",
      "Summarize the picture in a few words.",
      "What does this image show? Answer briefly.",
      "Give a brief description of the photo.",
      "Provide a concise caption for the picture.",
  };
  return prompts;
}

std::vector<Sample> load_caption_jsonl(const std::string& path, uint64_t seed, LoadReport* report, bool strict) {
  const std::string text = io::read_file(path);
  std::vector<Sample> out;
  const auto& prompts = caption_prompts();
  for_each_line(text, [&](int64_t line, std::string_view l) {
    std::string where = str_cat(path, ":", line);
    guarded(report, strict, [&] {
      using skip_reason::kMalformed;
      json j = parse_line(l, where);
      where = describe(where, id_of(j, ""));
      if (!j.is_object()) throw DataError(kMalformed, str_cat(where, ": expected a JSON object"));
      if (!j.contains("image") || !j["image"].is_string() || j["image"].get<std::string>().empty())
        throw DataError(kMalformed, str_cat(where, ": no \"image\" path"));
      if (!j.contains("caption") || !j["caption"].is_string())
        throw DataError(kMalformed, str_cat(where, ": no \"caption\" string"));
      Sample s;
      s.id = id_of(j, str_cat("line ", line));
      s.image_paths.push_back(j["image"].get<std::string>());
      std::string caption = j["caption"].get<std::string>();
      take_image_markers(caption);  // a stray marker would add an image token to the answer
      if (strip(caption).empty())
        throw DataError(skip_reason::kNoAssistant, str_cat(where, ": empty caption"));
      Rng rng(hash_key({seed, uint64_t(line), 0x63617074ULL /* "capt" */}));
      s.turns.push_back({"user", prompts[rng.below(prompts.size())], 1});
      s.turns.push_back({"assistant", std::move(caption), 0});
      out.push_back(std::move(s));
    });
  });
  return out;
}

}  // namespace iris::data
