// Text documents from plain-text, JSONL and LLaVA conversation files (see text_corpus.h).
#include "data/text_corpus.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>
#include <string_view>

#include "io/file.h"
#include "tensor/error.h"

namespace iris::data {

namespace {

using OJson = nlohmann::ordered_json;

bool ends_with_ci(const std::string& s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (size_t i = 0; i < suffix.size(); ++i) {
    if (std::tolower((unsigned char)s[s.size() - suffix.size() + i]) != suffix[i]) return false;
  }
  return true;
}

std::string_view drop_bom(std::string_view text) {
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  return text;
}

bool is_blank(std::string_view line) { return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos; }

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return "";
  return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

// Calls fn(line_number, line) for every line (without its "\n" and a "\r" before it).
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    fn(++line_no, line);
    pos = nl + 1;
  }
}

std::vector<std::string> plain_documents(std::string_view text) {
  std::vector<std::string> docs;
  std::string cur;
  for_each_line(text, [&](int64_t, std::string_view line) {
    if (is_blank(line)) {
      if (!cur.empty()) docs.push_back(std::move(cur));
      cur.clear();
      return;
    }
    if (!cur.empty()) cur += '\n';
    cur += line;
  });
  if (!cur.empty()) docs.push_back(std::move(cur));
  return docs;
}

// The string values under j, depth first in file order, skipping the keys that name files and items.
void collect_strings(const OJson& j, std::string& out) {
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (s.empty()) return;
    if (!out.empty()) out += '\n';
    out += s;
  } else if (j.is_array()) {
    for (const OJson& v : j) collect_strings(v, out);
  } else if (j.is_object()) {
    for (const auto& [key, v] : j.items()) {
      if (key == "id" || key == "image" || key == "images") continue;
      collect_strings(v, out);
    }
  }
}

std::vector<std::string> jsonl_documents(std::string_view text, const std::string& path) {
  std::vector<std::string> docs;
  for_each_line(text, [&](int64_t line_no, std::string_view line) {
    if (line_no == 1) line = drop_bom(line);
    if (is_blank(line)) return;
    OJson j;
    try {
      j = OJson::parse(line);
    } catch (const OJson::exception& e) {
      throw Error(str_cat(path, ":", line_no, ": malformed JSON: ", e.what()));
    }
    IRIS_CHECK(j.is_object(), path, ":", line_no, ": expected a JSON object, got ", j.type_name());
    std::string doc;
    collect_strings(j, doc);
    if (!doc.empty()) docs.push_back(std::move(doc));
  });
  return docs;
}

std::string remove_image_markers(std::string s) {
  static const std::string marker = "<image>";
  size_t pos;
  while ((pos = s.find(marker)) != std::string::npos) s.erase(pos, marker.size());
  return s;
}

std::vector<std::string> llava_documents(std::string_view text, const std::string& path) {
  text = drop_bom(text);
  const size_t first = text.find_first_not_of(" \t\r\n");
  IRIS_CHECK(first != std::string_view::npos && text[first] == '[', path,
             ": expected a JSON array of LLaVA conversations (use .jsonl for one object per line)");
  nlohmann::json arr = io::parse_json(text, path);  // located errors (line, column)
  IRIS_CHECK(arr.is_array(), path, ": expected a JSON array of LLaVA conversations");
  std::vector<std::string> docs;
  for (size_t i = 0; i < arr.size(); ++i) {
    const nlohmann::json& e = arr[i];
    const std::string where = str_cat(path, ": entry ", i);
    IRIS_CHECK(e.is_object(), where, ": expected an object, got ", e.type_name());
    IRIS_CHECK(e.contains("conversations") && e["conversations"].is_array(), where,
               ": expected a \"conversations\" array");
    std::string doc;
    const nlohmann::json& turns = e["conversations"];
    for (size_t t = 0; t < turns.size(); ++t) {
      const nlohmann::json& turn = turns[t];
      IRIS_CHECK(turn.is_object() && turn.contains("value") && turn["value"].is_string(), where, ": turn ", t,
                 ": expected an object with a string \"value\"");
      const std::string value = trim(remove_image_markers(turn["value"].get<std::string>()));
      if (value.empty()) continue;
      if (!doc.empty()) doc += '\n';
      doc += value;
    }
    if (!doc.empty()) docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace

TextFormat text_format_of(const std::string& path) {
  if (ends_with_ci(path, ".jsonl")) return TextFormat::Jsonl;
  if (ends_with_ci(path, ".json")) return TextFormat::LlavaJson;
  return TextFormat::Plain;
}

std::vector<std::string> read_text_documents(const std::string& path) {
  const std::string text = io::read_file(path);
  switch (text_format_of(path)) {
    case TextFormat::Jsonl:
      return jsonl_documents(text, path);
    case TextFormat::LlavaJson:
      return llava_documents(text, path);
    case TextFormat::Plain:
      break;
  }
  return plain_documents(drop_bom(text));
}

}  // namespace iris::data
