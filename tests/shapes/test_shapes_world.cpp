// The generated shapes world (`iris data shapes`): determinism, answers re-derived from scenes.jsonl by an
// independent question reader, rendered pixels against the scene, POPE balance and truth, captions,
// meta.json, the bitmap font, and clear errors on bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "data/font.h"
#include "data/shapes.h"
#include "tensor/error.h"
#include "test_util.h"
#include "vision/image.h"

using namespace iris;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string generate(const std::string& name, data::ShapesOptions opt) {
  const std::string dir = test::temp_dir() + "/" + name;
  fs::remove_all(dir);
  data::write_shapes_dataset(dir, opt);
  return dir;
}

data::ShapesOptions text_options(uint64_t seed) {
  data::ShapesOptions o;
  o.n = 24;
  o.seed = seed;
  o.text = true;
  return o;
}

// The main dataset of these tests: 24 images with labels, made once.
const std::string& main_dir() {
  static std::string dir = generate("main", text_options(7));
  return dir;
}

std::vector<json> read_jsonl(const std::string& path) {
  std::istringstream in(test::read_file(path));
  std::vector<json> out;
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<std::string> files_under(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

// ---- an independent reader of the generated questions ----

struct Obj {
  std::string shape, colour, text;
  int x0, y0, x1, y1;
};

struct World {
  int size = 0;
  std::vector<Obj> objects;
};

std::map<std::string, World> load_scenes(const std::string& dir) {
  std::map<std::string, World> out;
  for (const json& s : read_jsonl(dir + "/scenes.jsonl")) {
    World w;
    w.size = s["width"].get<int>();
    EXPECT_EQ(s["width"], s["height"]);
    for (const json& o : s["objects"]) {
      auto b = o["bbox"];
      w.objects.push_back({o["shape"], o["colour"], o["text"], b[0], b[1], b[2], b[3]});
    }
    out[s["image"]] = w;
  }
  return out;
}

struct Ref {
  std::string colour, shape;  // "" = not given
};

struct Reading {
  std::vector<Ref> refs;                  // shape words, with the colour word just before them
  std::vector<std::string> lone_colours;  // colour words not followed by a shape word
  std::set<std::string> words;
};

Reading read_question(const std::string& q, const std::set<std::string>& colours,
                      const std::set<std::string>& shapes) {
  std::vector<std::string> w;
  std::string cur;
  for (char c : q + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      cur += char(std::tolower(static_cast<unsigned char>(c)));
    } else if (!cur.empty()) {
      w.push_back(cur);
      cur.clear();
    }
  }
  Reading r;
  r.words.insert(w.begin(), w.end());
  auto shape_of = [&](const std::string& word) -> std::string {
    if (shapes.count(word)) return word;
    if (word.size() > 1 && word.back() == 's' && shapes.count(word.substr(0, word.size() - 1)))
      return word.substr(0, word.size() - 1);
    return "";
  };
  for (size_t i = 0; i < w.size(); ++i) {
    const std::string s = shape_of(w[i]);
    if (!s.empty()) {
      r.refs.push_back({i > 0 && colours.count(w[i - 1]) ? w[i - 1] : "", s});
    } else if (colours.count(w[i]) && !(i + 1 < w.size() && !shape_of(w[i + 1]).empty())) {
      r.lone_colours.push_back(w[i]);
    }
  }
  return r;
}

int count_matching(const World& w, const std::string& colour, const std::string& shape) {
  int n = 0;
  for (const Obj& o : w.objects)
    n += (colour.empty() || o.colour == colour) && (shape.empty() || o.shape == shape);
  return n;
}

// The one object a reference names; fails the test when it names none or several.
const Obj* resolve(const World& w, const Ref& r, const std::string& q) {
  const Obj* found = nullptr;
  int n = 0;
  for (const Obj& o : w.objects)
    if (o.shape == r.shape && (r.colour.empty() || o.colour == r.colour)) found = &o, ++n;
  EXPECT_EQ(n, 1) << "ambiguous or dangling reference in: " << q;
  return n == 1 ? found : nullptr;
}

// The answer to a question about a world, derived from the question text alone; "?" when it cannot be
// derived.
std::string derive(const std::string& type, const std::string& q, const World& w,
                   const std::set<std::string>& colours, const std::set<std::string>& shapes) {
  const Reading r = read_question(q, colours, shapes);
  const double N = w.size;
  if (type == "colour") {
    if (r.refs.size() != 1 || !r.refs[0].colour.empty() || count_matching(w, "", r.refs[0].shape) != 1)
      return "?";
    return resolve(w, r.refs[0], q)->colour;
  }
  if (type == "shape") {
    if (!r.refs.empty() || r.lone_colours.size() != 1 || count_matching(w, r.lone_colours[0], "") != 1)
      return "?";
    for (const Obj& o : w.objects)
      if (o.colour == r.lone_colours[0]) return o.shape;
  }
  if (type == "count" || type == "existence") {
    if (r.refs.size() > 1 || r.lone_colours.size() > 1) return "?";
    const std::string colour = !r.refs.empty()          ? r.refs[0].colour
                               : r.lone_colours.empty() ? ""
                                                        : r.lone_colours[0];
    const int n = count_matching(w, colour, r.refs.empty() ? "" : r.refs[0].shape);
    return type == "count" ? std::to_string(n) : n > 0 ? "yes" : "no";
  }
  if (type == "position") {
    if (r.refs.size() != 1) return "?";
    const Obj* o = resolve(w, r.refs[0], q);
    if (!o) return "?";
    const double cx = 0.5 * (o->x0 + o->x1), cy = 0.5 * (o->y0 + o->y1);
    if (r.words.count("left") && r.words.count("right")) {
      if (std::abs(cx - N / 2) < 0.1 * N) return "?";  // must be clear
      return cx < N / 2 ? "left" : "right";
    }
    if (r.words.count("top") && r.words.count("bottom")) {
      if (std::abs(cy - N / 2) < 0.1 * N) return "?";
      return cy < N / 2 ? "top" : "bottom";
    }
    return "?";
  }
  if (type == "relation") {
    if (r.refs.size() != 2) return "?";
    const Obj *a = resolve(w, r.refs[0], q), *b = resolve(w, r.refs[1], q);
    if (!a || !b) return "?";
    auto decide = [](bool yes, bool no) -> std::string { return yes ? "yes" : no ? "no" : "?"; };
    if (r.words.count("left")) return decide(a->x1 < b->x0, b->x1 < a->x0);
    if (r.words.count("right")) return decide(b->x1 < a->x0, a->x1 < b->x0);
    if (r.words.count("above")) return decide(a->y1 < b->y0, b->y1 < a->y0);
    if (r.words.count("below")) return decide(b->y1 < a->y0, a->y1 < b->y0);
    return "?";
  }
  if (type == "text") {
    if (r.refs.size() == 1) {
      const Obj* o = resolve(w, r.refs[0], q);
      return o && !o->text.empty() ? o->text : "?";
    }
    std::vector<std::string> labels;
    for (const Obj& o : w.objects)
      if (!o.text.empty()) labels.push_back(o.text);
    return labels.size() == 1 ? labels[0] : "?";
  }
  return "?";
}

json meta_of(const std::string& dir) {
  return json::parse(test::read_file(dir + "/meta.json"));
}

std::set<std::string> vocab(const json& meta, const char* key) {
  std::set<std::string> out;
  if (meta["vocab"][key].is_object())
    for (const auto& [k, v] : meta["vocab"][key].items()) out.insert(k);
  else
    for (const json& v : meta["vocab"][key]) out.insert(v.get<std::string>());
  return out;
}

}  // namespace

TEST(ShapesWorld, SameSeedGivesByteIdenticalFiles) {
  const std::string a = main_dir(), b = generate("again", text_options(7));
  const std::vector<std::string> fa = files_under(a), fb = files_under(b);
  ASSERT_EQ(fa, fb);
  EXPECT_EQ(fa.size(), 24u + 7u);  // images + llava, llava_text, captions, pope, scenes, regions, meta
  for (const std::string& f : fa) EXPECT_EQ(test::read_file(a + "/" + f), test::read_file(b + "/" + f)) << f;
}

TEST(ShapesWorld, OtherSeedOrSplitGivesOtherData) {
  const std::string a = main_dir(), b = generate("seed8", text_options(8));
  data::ShapesOptions v = text_options(7);
  v.split = "val";
  const std::string c = generate("val", v);
  for (const std::string& other : {b, c}) {
    EXPECT_NE(test::read_file(a + "/llava.json"), test::read_file(other + "/llava.json"));
    EXPECT_NE(test::read_file(a + "/scenes.jsonl"), test::read_file(other + "/scenes.jsonl"));
    int same_images = 0;
    for (int i = 0; i < 24; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "/images/%06d.png", i);
      same_images += test::read_file(a + name) == test::read_file(other + name);
    }
    EXPECT_EQ(same_images, 0);
  }
  EXPECT_NE(test::read_file(c + "/llava.json").find("\"val_000000_0\""), std::string::npos);
}

TEST(ShapesWorld, EveryAnswerFollowsFromTheScene) {
  const std::string dir = main_dir();
  const json meta = meta_of(dir);
  const std::set<std::string> colours = vocab(meta, "colours"), shapes = vocab(meta, "shapes");
  ASSERT_EQ(colours.size(), 8u);
  ASSERT_GE(shapes.size(), 5u);
  const auto scenes = load_scenes(dir);
  const json llava = json::parse(test::read_file(dir + "/llava.json"));
  std::map<std::string, int> by_type;
  const std::string suffix = "\nAnswer the question using a single word or phrase.";
  int instructed = 0, plain = 0;
  for (const json& rec : llava) {
    ASSERT_TRUE(scenes.count(rec["image"])) << rec["image"];
    const World& w = scenes.at(rec["image"]);
    const json& conv = rec["conversations"];
    ASSERT_GE(conv.size(), 2u);
    ASSERT_EQ(conv.size() % 2, 0u);
    EXPECT_EQ(conv[0]["value"].get<std::string>().rfind("<image>\n", 0), 0u) << rec["id"];
    for (size_t t = 0; t + 1 < conv.size(); t += 2) {
      ASSERT_EQ(conv[t]["from"], "human");
      ASSERT_EQ(conv[t + 1]["from"], "gpt");
      std::string q = conv[t]["value"];
      if (t > 0) {
        EXPECT_EQ(q.find("<image>"), std::string::npos);
      }
      if (q.rfind("<image>\n", 0) == 0) q = q.substr(8);
      const std::string type = conv[t + 1]["type"], answer = conv[t + 1]["value"];
      ++by_type[type];
      if (type == "caption") continue;
      if (q.size() >= suffix.size() && q.substr(q.size() - suffix.size()) == suffix) {  // about half carry it
        q = q.substr(0, q.size() - suffix.size());
        ++instructed;
      } else {
        ++plain;
      }
      EXPECT_EQ(derive(type, q, w, colours, shapes), answer) << rec["id"] << " [" << type << "] " << q;
    }
  }
  for (const char* t : {"caption", "colour", "shape", "count", "position", "relation", "existence", "text"})
    EXPECT_GT(by_type[t], 0) << t;
  EXPECT_GT(instructed, (instructed + plain) / 3);
  EXPECT_GT(plain, (instructed + plain) / 3);
  // Yes/no questions are not lopsided.
  int yes = 0, no = 0;
  for (const json& rec : llava)
    for (const json& turn : rec["conversations"])
      if (turn["from"] == "gpt") yes += turn["value"] == "yes", no += turn["value"] == "no";
  EXPECT_GT(yes, 0);
  EXPECT_GT(no, 0);
  EXPECT_LT(std::abs(yes - no), (yes + no) / 2);
  // Nor is any form of existence question: a form that is mostly "yes" can be answered without the image.
  std::map<std::string, std::pair<int, int>> by_form;  // question up to its first colour or shape word -> yes, no
  for (const json& rec : llava) {
    const json& conv = rec["conversations"];
    for (size_t t = 0; t + 1 < conv.size(); t += 2) {
      if (conv[t + 1]["type"] != "existence") continue;
      std::string q = conv[t]["value"];
      if (q.rfind("<image>\n", 0) == 0) q = q.substr(8);
      const std::string form = q.rfind("Is there anything", 0) == 0 ? "anything"
                               : q.rfind("Are there any", 0) == 0   ? "any"
                                                                    : "a";
      (conv[t + 1]["value"] == "yes" ? by_form[form].first : by_form[form].second)++;
    }
  }
  ASSERT_EQ(by_form.size(), 3u);
  for (const auto& [form, c] : by_form) {
    EXPECT_GT(c.first, 0) << form;
    EXPECT_EQ(c.first, c.second) << form << ": one yes and one no of a form per scene";
  }
}

TEST(ShapesWorld, ImagesShowTheirScenes) {
  const std::string dir = main_dir();
  const json meta = meta_of(dir);
  int checked = 0, labelled = 0;
  for (const json& s : read_jsonl(dir + "/scenes.jsonl")) {
    const vision::Image img = vision::load_image(dir + "/" + s["image"].get<std::string>());
    ASSERT_EQ(img.channels, 3);
    ASSERT_EQ(img.width, s["width"].get<int>());
    ASSERT_EQ(img.height, s["height"].get<int>());
    EXPECT_GE(img.width, 64);
    EXPECT_LE(img.width, 224);
    const int noise = s["background"]["noise"];
    const auto& objs = s["objects"];
    EXPECT_GE(objs.size(), 1u);
    EXPECT_LE(objs.size(), 6u);
    for (size_t i = 0; i < objs.size(); ++i) {
      const auto b = objs[i]["bbox"];
      EXPECT_GE(b[0].get<int>(), 0);
      EXPECT_GE(b[1].get<int>(), 0);
      EXPECT_LE(b[2].get<int>(), img.width);
      EXPECT_LE(b[3].get<int>(), img.height);
      for (size_t j = 0; j < i; ++j) {  // boxes never overlap
        const auto c = objs[j]["bbox"];
        const bool apart = b[2] <= c[0] || c[2] <= b[0] || b[3] <= c[1] || c[3] <= b[1];
        EXPECT_TRUE(apart) << s["image"] << " objects " << j << " and " << i;
      }
      if (!objs[i]["text"].get<std::string>().empty()) {
        ++labelled;
        continue;  // the label covers the centre
      }
      const int x = objs[i]["inside"][0], y = objs[i]["inside"][1];
      const auto rgb = meta["vocab"]["colours"][objs[i]["colour"].get<std::string>()];
      const uint8_t* px = img.row(y) + 3 * x;
      for (int c = 0; c < 3; ++c)
        EXPECT_LE(std::abs(int(px[c]) - rgb[size_t(c)].get<int>()), noise + 1)
            << s["image"] << " " << objs[i]["colour"] << " " << objs[i]["shape"] << " at " << x << "," << y;
      ++checked;
    }
  }
  EXPECT_GT(checked, 30);
  EXPECT_GT(labelled, 3);
}

TEST(ShapesWorld, ColoursContrastWithBackgrounds) {
  for (int c = 0; c < data::kNumColours; ++c) {
    for (const data::Rgb& bg : data::background_palette()) {
      const data::Rgb o = data::colour_rgb(c);
      double d2 = 0;
      for (int k = 0; k < 3; ++k) d2 += (o[size_t(k)] - bg[size_t(k)]) * double(o[size_t(k)] - bg[size_t(k)]);
      EXPECT_GT(std::sqrt(d2), 90.0) << data::colour_name(c);
    }
    for (int d = 0; d < c; ++d) {
      double d2 = 0;
      for (int k = 0; k < 3; ++k) {
        const double x = data::colour_rgb(c)[size_t(k)] - double(data::colour_rgb(d)[size_t(k)]);
        d2 += x * x;
      }
      EXPECT_GE(std::sqrt(d2), 100.0) << data::colour_name(c) << " vs " << data::colour_name(d);
    }
  }
}

TEST(ShapesWorld, PopeIsBalancedAndTrue) {
  const std::string dir = main_dir();
  const auto scenes = load_scenes(dir);
  std::map<std::string, std::pair<int, int>> yes_no;                             // split -> counts
  std::map<std::pair<std::string, std::string>, std::pair<int, int>> per_image;  // (image, split) -> counts
  for (const json& p : read_jsonl(dir + "/pope.jsonl")) {
    const std::string split = p["split"], ans = p["answer"], q = p["question"];
    ASSERT_TRUE(split == "random" || split == "popular" || split == "adversarial") << split;
    ASSERT_TRUE(ans == "yes" || ans == "no");
    EXPECT_EQ(q.rfind("Is there a", 0), 0u) << q;
    const World& w = scenes.at(p["image"]);
    std::string obj = p["object"];  // "red circle"
    const size_t sp = obj.find(' ');
    const int n = count_matching(w, obj.substr(0, sp), obj.substr(sp + 1));
    EXPECT_EQ(ans, n > 0 ? "yes" : "no") << q << " in " << p["image"];
    EXPECT_NE(q.find(obj), std::string::npos);
    (ans == "yes" ? yes_no[split].first : yes_no[split].second)++;
    (ans == "yes" ? per_image[{p["image"], split}].first : per_image[{p["image"], split}].second)++;
  }
  ASSERT_EQ(yes_no.size(), 3u);
  for (const auto& [split, c] : yes_no) {
    EXPECT_EQ(c.first, c.second) << split;
    EXPECT_GE(c.first, 24) << split;
  }
  for (const auto& [key, c] : per_image) EXPECT_EQ(c.first, c.second);
}

TEST(ShapesWorld, AdversarialNegativesResemblePresentObjects) {
  const std::string dir = main_dir();
  const auto scenes = load_scenes(dir);
  int similar = 0, total = 0;
  for (const json& p : read_jsonl(dir + "/pope.jsonl")) {
    if (p["split"] != "adversarial" || p["answer"] != "no") continue;
    std::string obj = p["object"];
    const size_t sp = obj.find(' ');
    const World& w = scenes.at(p["image"]);
    ++total;
    similar += count_matching(w, obj.substr(0, sp), "") > 0 || count_matching(w, "", obj.substr(sp + 1)) > 0;
  }
  EXPECT_GT(total, 0);
  EXPECT_EQ(similar, total);
}

TEST(ShapesWorld, CaptionsNameEveryObject) {
  const std::string dir = main_dir();
  const auto scenes = load_scenes(dir);
  std::map<std::string, int> per_image;
  for (const json& c : read_jsonl(dir + "/captions.jsonl")) {
    const std::string text = c["caption"];
    ++per_image[c["image"]];
    for (const Obj& o : scenes.at(c["image"]).objects) {
      EXPECT_NE(text.find(o.colour), std::string::npos) << text;
      EXPECT_NE(text.find(o.shape), std::string::npos) << text;
      if (!o.text.empty()) {
        EXPECT_NE(text.find(o.text), std::string::npos) << text;
      }
    }
  }
  EXPECT_EQ(per_image.size(), 24u);
  for (const auto& [img, n] : per_image) EXPECT_EQ(n, 3) << img;
}

// llava_text.json: every question conversation of llava.json, in the same order and with the same id, with one of
// its image's captions in place of "<image>"; no image field, no caption conversations.
TEST(ShapesWorld, TextConversationsAreTheQuestionsWithACaption) {
  const std::string dir = main_dir();
  const json llava = json::parse(test::read_file(dir + "/llava.json"));
  const json text = json::parse(test::read_file(dir + "/llava_text.json"));
  std::map<std::string, std::set<std::string>> captions;
  for (const json& c : read_jsonl(dir + "/captions.jsonl")) captions[c["image"]].insert(c["caption"]);
  size_t k = 0, used_other = 0;
  for (const json& rec : llava) {
    if (rec["conversations"][1]["type"] == "caption") continue;
    ASSERT_LT(k, text.size());
    const json& t = text[k++];
    EXPECT_EQ(t["id"], rec["id"]);
    EXPECT_FALSE(t.contains("image"));
    const json &a = rec["conversations"], &b = t["conversations"];
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 1; i < a.size(); ++i) EXPECT_EQ(a[i], b[i]) << t["id"];
    EXPECT_EQ(a[0]["from"], b[0]["from"]);
    const std::string question = a[0]["value"], with_caption = b[0]["value"];
    ASSERT_EQ(question.rfind("<image>\n", 0), 0u);
    const std::string rest = question.substr(std::string("<image>").size());  // "\n" + the question
    ASSERT_GT(with_caption.size(), rest.size());
    EXPECT_EQ(with_caption.substr(with_caption.size() - rest.size()), rest);
    const std::string caption = with_caption.substr(0, with_caption.size() - rest.size());
    EXPECT_EQ(captions.at(rec["image"]).count(caption), 1u) << caption;
    used_other += caption != *captions.at(rec["image"]).begin();
  }
  EXPECT_EQ(k, text.size());
  EXPECT_GT(k, 24u);
  EXPECT_GT(used_other, 0u);  // the caption is drawn, not always the same one
}

// regions.jsonl: one line per image, one region per object with its box and "size colour shape" phrase.
TEST(ShapesWorld, RegionsAreTheSceneObjects) {
  const std::string dir = main_dir();
  const auto scenes = load_scenes(dir);
  std::vector<json> scene_lines = read_jsonl(dir + "/scenes.jsonl"), lines = read_jsonl(dir + "/regions.jsonl");
  ASSERT_EQ(lines.size(), scene_lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& r = lines[i];
    const json& sc = scene_lines[i];
    ASSERT_EQ(r["image"], sc["image"]);
    const World& w = scenes.at(r["image"]);
    ASSERT_EQ(r["regions"].size(), w.objects.size()) << r["image"];
    for (size_t k = 0; k < w.objects.size(); ++k) {
      const Obj& o = w.objects[k];
      EXPECT_EQ(r["regions"][k]["bbox"], json::array({o.x0, o.y0, o.x1, o.y1}));
      const std::string size = sc["objects"][k]["size"];
      EXPECT_EQ(r["regions"][k]["text"], size + " " + o.colour + " " + o.shape);
    }
  }
}

TEST(ShapesWorld, MetaCountsMatchTheFiles) {
  const std::string dir = main_dir();
  const json meta = meta_of(dir);
  EXPECT_EQ(meta["seed"], 7);
  EXPECT_EQ(meta["split"], "train");
  EXPECT_EQ(meta["text"], true);
  const json& c = meta["counts"];
  EXPECT_EQ(c["images"], 24);
  EXPECT_EQ(c["captions"].get<size_t>(), read_jsonl(dir + "/captions.jsonl").size());
  EXPECT_EQ(c["pope"].get<size_t>(), read_jsonl(dir + "/pope.jsonl").size());
  const json llava = json::parse(test::read_file(dir + "/llava.json"));
  EXPECT_EQ(c["conversations"].get<size_t>(), llava.size());
  size_t questions = 0, objects = 0;
  for (const json& rec : llava)
    for (const json& t : rec["conversations"]) questions += t["from"] == "gpt" && t["type"] != "caption";
  for (const json& s : read_jsonl(dir + "/scenes.jsonl")) objects += s["objects"].size();
  EXPECT_EQ(c["questions"].get<size_t>(), questions);
  EXPECT_EQ(c["objects"].get<size_t>(), objects);
}

TEST(ShapesWorld, SizeOptionsAreHonoured) {
  data::ShapesOptions o;
  o.n = 6;
  o.seed = 3;
  o.min_size = o.max_size = 96;
  const std::string dir = generate("fixed96", o);
  for (const json& s : read_jsonl(dir + "/scenes.jsonl")) {
    EXPECT_EQ(s["width"], 96);
    for (const json& obj : s["objects"]) EXPECT_EQ(obj["text"], "");  // no --text, no labels
  }
  const json llava = json::parse(test::read_file(dir + "/llava.json"));
  for (const json& rec : llava)
    for (const json& t : rec["conversations"]) EXPECT_NE(t.value("type", ""), "text");
}

TEST(ShapesWorld, BadOptionsGiveClearErrors) {
  auto expect_error = [](data::ShapesOptions o, const std::string& hint) {
    try {
      data::validate(o);
      ADD_FAILURE() << "no error for " << hint;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(hint), std::string::npos) << e.what();
    }
  };
  data::ShapesOptions o;
  o.n = 0;
  expect_error(o, "--n 0 is out of range");
  o.n = -5;
  expect_error(o, "--n -5 is out of range");
  o.n = 10;
  o.min_size = 8;
  expect_error(o, "--min-size 8 is out of range");
  o.min_size = 64;
  o.max_size = 5000;
  expect_error(o, "--max-size 5000 is out of range");
  o.min_size = 200;
  o.max_size = 100;
  expect_error(o, "--min-size 200 is larger than --max-size 100");
  o.min_size = 64;
  o.max_size = 224;
  o.split = "a/b";
  expect_error(o, "--split \"a/b\"");
  // The writer validates too, before touching the disk.
  o.split = "train";
  o.n = 0;
  const std::string dir = test::temp_dir() + "/never";
  EXPECT_THROW(data::write_shapes_dataset(dir, o), Error);
  EXPECT_FALSE(fs::exists(dir));
}

TEST(ShapesFont, GlyphsAreDistinctAndDrawn) {
  const std::string chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::set<uint64_t> seen;  // each glyph's 7 rows packed into one number
  for (char c : chars) {
    const uint8_t* g = data::glyph(c);
    ASSERT_NE(g, nullptr) << c;
    uint64_t packed = 0;
    for (int r = 0; r < data::kGlyphHeight; ++r) {
      EXPECT_EQ(g[r] & ~0x1F, 0) << c;
      packed = packed << 8 | g[r];
    }
    EXPECT_NE(packed, 0u) << c;
    EXPECT_TRUE(seen.insert(packed).second) << "duplicate glyph " << c;
  }
  EXPECT_EQ(data::glyph('?'), nullptr);
  EXPECT_EQ(data::text_width("CAT", 2), 3 * 10 + 2 * 2);

  // "T" at scale 2: the top bar is 10 pixels wide and 2 high, the stem 2 wide in the middle.
  vision::Image img = vision::Image::zeros(12, 16, 3);
  data::draw_text(img, 1, 1, "T", 2, {255, 0, 0});
  auto red = [&](int x, int y) { return img.row(y)[3 * x] == 255; };
  for (int x = 1; x < 11; ++x) EXPECT_TRUE(red(x, 1) && red(x, 2)) << x;
  EXPECT_FALSE(red(0, 1));
  EXPECT_FALSE(red(11, 1));
  for (int y = 3; y < 15; ++y) {
    EXPECT_TRUE(red(5, y) && red(6, y)) << y;
    EXPECT_FALSE(red(4, y) || red(7, y)) << y;
  }
  EXPECT_FALSE(red(5, 15));
  EXPECT_THROW(data::draw_text(img, 0, 0, "A?", 1, {0, 0, 0}), Error);
  vision::Image small = vision::Image::zeros(8, 8, 3);
  data::draw_text(small, -3, -2, "WIDE TEXT", 1, {255, 0, 0});  // partly off the image: clipped
  // Row 0 shows glyph row 2: W's "#...#" (columns 0 and 4 -> x -3 and 1) and I's "..#.." (x -3 + 6 + 2 = 5).
  for (int x = 0; x < 8; ++x) EXPECT_EQ(small.row(0)[3 * x], (x == 1 || x == 5) ? 255 : 0) << x;
}
