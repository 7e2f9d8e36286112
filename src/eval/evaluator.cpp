// The evaluation loop: reads LLaVA JSON / caption JSONL / POPE JSONL, asks the model (greedy), scores,
// reports.
#include "eval/evaluator.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <list>
#include <map>
#include <sstream>

#include "eval/metrics.h"
#include "tensor/error.h"

namespace iris::eval {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string read_text(const std::string& path, const char* what) {
  std::ifstream f(path, std::ios::binary);
  IRIS_CHECK(f.good(), "eval: cannot read the ", what, " file ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  IRIS_CHECK(!f.bad(), "eval: error reading ", path);
  return ss.str();
}

// Every non-blank line of a JSONL file as an object.
std::vector<json> read_jsonl(const std::string& path, const char* what) {
  std::istringstream in(read_text(path, what));
  std::vector<json> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j = json::parse(line, nullptr, false);
    IRIS_CHECK(!j.is_discarded() && j.is_object(), "eval: ", path, " line ", n, " is not a JSON object");
    out.push_back(std::move(j));
  }
  return out;
}

std::string get_string(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  IRIS_CHECK(it != j.end() && it->is_string(), "eval: ", where, " has no string \"", key, "\"");
  return it->get<std::string>();
}

// Removes "<image>" markers (and the newline that LLaVA puts beside them); returns how many there were.
int strip_image_tokens(std::string& text) {
  int n = 0;
  size_t pos;
  while ((pos = text.find("<image>")) != std::string::npos) {
    size_t len = 7;
    if (pos + len < text.size() && text[pos + len] == '\n')
      ++len;
    else if (pos > 0 && text[pos - 1] == '\n')
      --pos, ++len;
    text.erase(pos, len);
    ++n;
  }
  return n;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

json metrics_json(const PopeMetrics& m) {
  return {{"count", m.count}, {"accuracy", m.accuracy},   {"precision", m.precision}, {"recall", m.recall},
          {"f1", m.f1},       {"yes_ratio", m.yes_ratio}, {"unknown", m.unknown}};
}

class Runner {
 public:
  Runner(const runtime::Engine& engine, const EvalOptions& opt, const std::string& images_dir)
      : engine_(engine), opt_(opt), images_dir_(images_dir), vision_(engine.model().has_vision()) {}

  bool has_vision() const { return vision_; }

  // Generates the answer to `messages` (the image, if any, belongs to the messages' n_images). Returns false
  // when the prompt does not fit the context.
  bool ask(std::vector<runtime::ChatMessage> messages, const std::string& image, int max_tokens,
           std::string* out) {
    int n_images = 0;
    for (runtime::ChatMessage& m : messages) {
      if (!vision_ || image.empty()) m.n_images = 0;  // a text model, or a text-only record
      n_images += m.n_images;
    }
    std::vector<models::ImageFeatures> embs;
    std::vector<models::ImagePixels> pixels;
    if (n_images > 0) {
      const Encoded& e = encoded(image);
      for (int i = 0; i < n_images; ++i) {
        embs.push_back(e.features);
        pixels.push_back(e.pixels);
      }
    }
    // From the processed images: their token counts, or (Idefics3) their tiles' markers.
    const std::vector<int32_t> ids = engine_.tokenize_prompt(engine_.render_prompt(messages), pixels);
    if (int64_t(ids.size()) + 1 >= engine_.n_ctx()) return false;
    runtime::GenerateOptions g;
    g.max_new_tokens = max_tokens;  // greedy: default sampling has temperature 0
    *out = trim(engine_.generate(ids, embs, g).text);
    return true;
  }

 private:
  struct Encoded {
    models::ImagePixels pixels;
    models::ImageFeatures features;
  };

  const Encoded& encoded(const std::string& image) {
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
      if (it->first == image) {
        cache_.splice(cache_.begin(), cache_, it);
        return cache_.front().second;
      }
    const fs::path p = fs::path(image).is_absolute() ? fs::path(image) : fs::path(images_dir_) / image;
    vision::Image img;
    try {
      img = vision::load_image(p.string(), opt_.decode);
    } catch (const Error& e) {
      throw Error(str_cat("eval: image ", image, " (", p.string(), "): ", e.what()));
    }
    if (opt_.blind) {  // same size, uniform mid-grey
      vision::Image grey = vision::Image::zeros(img.width, img.height, 3);
      std::fill(grey.pixels.begin(), grey.pixels.end(), uint8_t(128));
      img = std::move(grey);
    }
    Encoded e;
    e.pixels = engine_.process_image(img);
    e.features = engine_.encode_image(e.pixels);
    cache_.emplace_front(image, std::move(e));
    if (cache_.size() > 8) cache_.pop_back();
    return cache_.front().second;
  }

  const runtime::Engine& engine_;
  const EvalOptions& opt_;
  std::string images_dir_;
  bool vision_;
  std::list<std::pair<std::string, Encoded>> cache_;  // most recent first
};

class Progress {
 public:
  Progress(bool on, const char* what, size_t total) : on_(on), what_(what), total_(total) {}
  void step(size_t done) {
    if (!on_) return;
    std::fprintf(stderr, "\r%s %zu / %zu", what_, done, total_);
    if (done == total_) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }

 private:
  bool on_;
  const char* what_;
  size_t total_;
};

}  // namespace

std::vector<VqaItem> load_llava_questions(const std::string& path, int64_t* skipped_captions) {
  json data = json::parse(read_text(path, "data"), nullptr, false);
  IRIS_CHECK(!data.is_discarded(), "eval: ", path, " is not valid JSON");
  IRIS_CHECK(data.is_array(), "eval: ", path, " must hold a JSON array of LLaVA records");
  std::vector<VqaItem> items;
  int64_t skipped = 0;
  for (size_t r = 0; r < data.size(); ++r) {
    const json& rec = data[r];
    const std::string where = path + " record " + std::to_string(r);
    IRIS_CHECK(rec.is_object(), "eval: ", where, " is not an object");
    std::string id = rec.contains("id")
                         ? (rec["id"].is_string() ? rec["id"].get<std::string>() : rec["id"].dump())
                         : std::to_string(r);
    std::string image;
    if (rec.contains("image") && !rec["image"].is_null()) image = get_string(rec, "image", where);
    auto conv = rec.find("conversations");
    IRIS_CHECK(conv != rec.end() && conv->is_array(), "eval: ", where, " has no \"conversations\" array");
    std::vector<VqaItem::Turn> turns;
    bool any_image_token = false;
    const size_t first_item = items.size();
    for (size_t t = 0; t < conv->size(); ++t) {
      const json& turn = (*conv)[t];
      const std::string tw = where + " turn " + std::to_string(t);
      IRIS_CHECK(turn.is_object(), "eval: ", tw, " is not an object");
      const std::string from = get_string(turn, "from", tw);
      std::string text = get_string(turn, "value", tw);
      if (from == "human" || from == "user") {
        VqaItem::Turn u{"user", text, 0};
        u.n_images = strip_image_tokens(u.text);
        any_image_token = any_image_token || u.n_images > 0;
        turns.push_back(u);
        continue;
      }
      IRIS_CHECK(from == "gpt" || from == "assistant", "eval: ", tw, ": \"from\" is \"", from,
                 "\" (expected human or gpt)");
      IRIS_CHECK(!turns.empty() && turns.back().role == "user", "eval: ", tw,
                 ": a gpt turn must follow a human turn");
      const std::string type =
          turn.contains("type") && turn["type"].is_string() ? turn["type"].get<std::string>() : "";
      if (type == "caption") {
        ++skipped;
      } else {
        VqaItem item;
        item.id = id;
        item.image = image;
        item.type = type;
        item.history.assign(turns.begin(), turns.end() - 1);
        item.question = turns.back();
        if (turn.contains("answers")) {
          IRIS_CHECK(turn["answers"].is_array() && !turn["answers"].empty(), "eval: ", tw,
                     ": \"answers\" must be a non-empty array of strings");
          for (const json& a : turn["answers"]) {
            IRIS_CHECK(a.is_string(), "eval: ", tw, ": \"answers\" must hold strings");
            item.answers.push_back(a.get<std::string>());
          }
        } else {
          item.answers.push_back(text);
        }
        items.push_back(std::move(item));
      }
      turns.push_back({"assistant", text, 0});
    }
    // A record with an image but no "<image>" marker: the image goes with the first question (as LLaVA does).
    if (!image.empty() && !any_image_token)
      for (size_t k = first_item; k < items.size(); ++k)
        (items[k].history.empty() ? items[k].question : items[k].history.front()).n_images = 1;
  }
  if (skipped_captions) *skipped_captions = skipped;
  return items;
}

json evaluate(const runtime::Engine& engine, const EvalOptions& opt) {
  IRIS_CHECK(!opt.data.empty() || !opt.pope.empty() || !opt.captions.empty(),
             "eval: nothing to evaluate (give --data, --pope or --captions)");
  IRIS_CHECK(opt.vqa_tokens > 0 && opt.caption_tokens > 0 && opt.pope_tokens > 0,
             "eval: token limits must be positive");
  std::string images_dir = opt.images;
  if (images_dir.empty()) {
    const std::string first = !opt.data.empty() ? opt.data : !opt.captions.empty() ? opt.captions : opt.pope;
    images_dir = fs::path(first).parent_path().string();
    if (images_dir.empty()) images_dir = ".";
  }
  const auto t0 = std::chrono::steady_clock::now();
  Runner runner(engine, opt, images_dir);
  std::ofstream preds;
  if (!opt.predictions.empty()) {
    preds.open(opt.predictions, std::ios::binary | std::ios::trunc);
    IRIS_CHECK(preds.good(), "eval: cannot write ", opt.predictions);
  }
  auto limited = [&](size_t n) { return opt.limit > 0 ? std::min(n, size_t(opt.limit)) : n; };

  json report = {{"model", opt.model},
                 {"data", opt.data},
                 {"images", images_dir},
                 {"pope_file", opt.pope},
                 {"captions_file", opt.captions},
                 {"blind", opt.blind},
                 {"limit", opt.limit},
                 {"model_has_vision", runner.has_vision()},
                 {"settings",
                  {{"greedy", true},
                   {"vqa_tokens", opt.vqa_tokens},
                   {"caption_tokens", opt.caption_tokens},
                   {"pope_tokens", opt.pope_tokens},
                   {"caption_prompt", opt.caption_prompt},
                   {"pope_suffix", opt.pope_suffix}}}};

  if (!opt.data.empty()) {
    int64_t skipped_captions = 0, too_long = 0;
    const std::vector<VqaItem> items = load_llava_questions(opt.data, &skipped_captions);
    const size_t n = limited(items.size());
    std::map<std::string, std::pair<int64_t, double>> by_type;  // type -> (count, summed accuracy)
    int64_t count = 0;
    double sum = 0;
    Progress progress(opt.progress, "vqa", n);
    for (size_t i = 0; i < n; ++i) {
      const VqaItem& it = items[i];
      std::vector<runtime::ChatMessage> msgs;
      for (const VqaItem::Turn& t : it.history) msgs.push_back({t.role, t.text, t.n_images});
      msgs.push_back({"user", it.question.text, it.question.n_images});
      std::string pred;
      if (!runner.ask(msgs, it.image, opt.vqa_tokens, &pred)) {
        ++too_long;
        progress.step(i + 1);
        continue;
      }
      const double acc = vqa_accuracy(pred, it.answers);
      const std::string type = it.type.empty() ? "other" : it.type;
      ++count;
      sum += acc;
      ++by_type[type].first;
      by_type[type].second += acc;
      if (preds.is_open())
        preds << json{{"task", "vqa"},
                      {"id", it.id},
                      {"image", it.image},
                      {"type", type},
                      {"question", it.question.text},
                      {"prediction", pred},
                      {"answers", it.answers},
                      {"accuracy", acc}}
                     .dump()
              << "\n";
      progress.step(i + 1);
    }
    json types = json::object();
    for (const auto& [t, cs] : by_type)
      types[t] = {{"count", cs.first}, {"accuracy", cs.second / double(cs.first)}};
    report["vqa"] = {{"count", count},
                     {"accuracy", count ? sum / double(count) : 0.0},
                     {"by_type", types},
                     {"questions_in_file", items.size()},
                     {"skipped_caption_turns", skipped_captions},
                     {"skipped_too_long", too_long}};
  }

  if (!opt.captions.empty()) {
    std::vector<std::string> order;  // images in first-seen order, with their reference captions
    std::map<std::string, std::vector<std::string>> refs;
    for (const json& line : read_jsonl(opt.captions, "captions")) {
      const std::string image = get_string(line, "image", opt.captions + " line");
      const std::string caption = get_string(line, "caption", opt.captions + " line");
      if (!refs.count(image)) order.push_back(image);
      refs[image].push_back(caption);
    }
    const size_t n = limited(order.size());
    std::vector<std::string> hyps;
    std::vector<std::vector<std::string>> tok_refs;
    int64_t too_long = 0;
    Progress progress(opt.progress, "captions", n);
    for (size_t i = 0; i < n; ++i) {
      std::string pred;
      if (!runner.ask({{"user", opt.caption_prompt, 1}}, order[i], opt.caption_tokens, &pred)) {
        ++too_long;
        progress.step(i + 1);
        continue;
      }
      hyps.push_back(caption_tokenize(pred));
      tok_refs.emplace_back();
      for (const std::string& r : refs[order[i]]) tok_refs.back().push_back(caption_tokenize(r));
      if (preds.is_open())
        preds << json{{"task", "caption"},
                      {"image", order[i]},
                      {"prediction", pred},
                      {"references", refs[order[i]]}}
                     .dump()
              << "\n";
      progress.step(i + 1);
    }
    const BleuResult bleu = corpus_bleu(hyps, tok_refs);
    const double cider = cider_d(hyps, tok_refs);
    report["captions"] = {
        {"images", hyps.size()},   {"bleu", bleu.bleu},       {"bleu4", bleu.bleu[3]},       {"cider", cider},
        {"hyp_len", bleu.hyp_len}, {"ref_len", bleu.ref_len}, {"skipped_too_long", too_long}};
  }

  if (!opt.pope.empty()) {
    const std::vector<json> probes = read_jsonl(opt.pope, "POPE");
    const size_t n = limited(probes.size());
    std::map<std::string, PopeCounts> splits;
    PopeCounts all;
    int64_t too_long = 0;
    Progress progress(opt.progress, "pope", n);
    for (size_t i = 0; i < n; ++i) {
      const std::string where = opt.pope + " line " + std::to_string(i + 1);
      const std::string image = get_string(probes[i], "image", where);
      const std::string question = get_string(probes[i], "question", where);
      const std::string label = get_string(probes[i], "answer", where);
      const YesNo gt = parse_yes_no(label);
      IRIS_CHECK(gt != YesNo::Unknown, "eval: ", where, ": answer \"", label, "\" is neither yes nor no");
      const std::string split = probes[i].contains("split") && probes[i]["split"].is_string()
                                    ? probes[i]["split"].get<std::string>()
                                    : "all";
      std::string pred;
      if (!runner.ask({{"user", question + opt.pope_suffix, 1}}, image, opt.pope_tokens, &pred)) {
        ++too_long;
        progress.step(i + 1);
        continue;
      }
      const YesNo p = parse_yes_no(pred);
      splits[split].add(gt == YesNo::Yes, p);
      all.add(gt == YesNo::Yes, p);
      if (preds.is_open())
        preds << json{{"task", "pope"},       {"image", image},     {"split", split},
                      {"question", question}, {"prediction", pred}, {"answer", label}}
                     .dump()
              << "\n";
      progress.step(i + 1);
    }
    json sp = json::object();
    for (const auto& [name, c] : splits) sp[name] = metrics_json(pope_metrics(c));
    report["pope"] = {
        {"splits", sp}, {"all", metrics_json(pope_metrics(all))}, {"skipped_too_long", too_long}};
  }
  if (preds.is_open()) {
    preds.flush();
    IRIS_CHECK(preds.good(), "eval: writing ", opt.predictions, " failed");
  }
  report["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

std::string format_report(const json& r) {
  std::string out;
  char buf[256];
  auto pct = [](const json& x) { return 100.0 * x.get<double>(); };
  std::snprintf(buf, sizeof buf, "iris eval: %s%s\n", r.value("model", std::string()).c_str(),
                r.value("blind", false) ? "  (blind: images replaced by grey)" : "");
  out += buf;
  if (r.contains("vqa")) {
    const json& v = r["vqa"];
    std::snprintf(buf, sizeof buf, "\nVQA %-18s %8s %9s\n", "", "count", "accuracy");
    out += buf;
    std::snprintf(buf, sizeof buf, "  %-20s %8lld %8.2f%%\n", "overall",
                  static_cast<long long>(v["count"].get<int64_t>()), pct(v["accuracy"]));
    out += buf;
    for (const auto& [t, m] : v["by_type"].items()) {
      std::snprintf(buf, sizeof buf, "  %-20s %8lld %8.2f%%\n", t.c_str(),
                    static_cast<long long>(m["count"].get<int64_t>()), pct(m["accuracy"]));
      out += buf;
    }
  }
  if (r.contains("captions")) {
    const json& c = r["captions"];
    std::snprintf(buf, sizeof buf, "\nCaptions: %lld images  BLEU-4 %.4f  CIDEr %.4f\n",
                  static_cast<long long>(c["images"].get<int64_t>()), c["bleu4"].get<double>(),
                  c["cider"].get<double>());
    out += buf;
  }
  if (r.contains("pope")) {
    std::snprintf(buf, sizeof buf, "\nPOPE %-11s %7s %8s %9s %8s %8s %8s %8s\n", "", "count", "accuracy",
                  "precision", "recall", "F1", "yes", "unknown");
    out += buf;
    auto row = [&](const std::string& name, const json& m) {
      std::snprintf(buf, sizeof buf, "  %-15s %7lld %7.2f%% %8.2f%% %7.2f%% %7.2f%% %7.2f%% %8lld\n",
                    name.c_str(), static_cast<long long>(m["count"].get<int64_t>()), pct(m["accuracy"]),
                    pct(m["precision"]), pct(m["recall"]), pct(m["f1"]), pct(m["yes_ratio"]),
                    static_cast<long long>(m["unknown"].get<int64_t>()));
      out += buf;
    };
    for (const auto& [name, m] : r["pope"]["splits"].items()) row(name, m);
    if (r["pope"]["splits"].size() > 1) row("all", r["pope"]["all"]);
  }
  return out;
}

}  // namespace iris::eval
