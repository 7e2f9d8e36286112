// Language about the shapes world: typed questions whose answers follow from the scene alone (an object is
// only named when the name picks exactly one object; spatial questions only when the gap is clear), captions
// in several phrasings, POPE probes, and the dataset writer (images, LLaVA JSON, JSONL files, meta.json).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/rng.h"
#include "data/shapes.h"
#include "tensor/error.h"

namespace iris::data {

namespace {

using nlohmann::json;

template <typename T>
const T& pick(const std::vector<T>& v, Rng& rng) {
  return v[rng.below(v.size())];
}

std::string article(const std::string& word) {
  return std::string(std::string("aeiou").find(word[0]) != std::string::npos ? "an " : "a ") + word;
}

std::string capitalise(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = char(s[0] - 'a' + 'A');
  return s;
}

const char* number_word(size_t n) {
  static constexpr const char* w[] = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight"};
  return n < 9 ? w[n] : "many";
}

// "a, b and c"
std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

std::string combo(const SceneObject& o) {
  return std::string(colour_name(o.colour)) + " " + shape_name(o.shape);
}

int pair_index(int colour, int shape) {
  return colour * kNumShapes + shape;
}

struct SceneFacts {
  const Scene& s;
  explicit SceneFacts(const Scene& scene) : s(scene) {}
  int count(int colour, int shape) const {  // -1: any
    int n = 0;
    for (const SceneObject& o : s.objects)
      n += (colour < 0 || o.colour == colour) && (shape < 0 || o.shape == shape);
    return n;
  }
  // A name that picks object i alone ("circle" when it is the only circle, "red circle" when it is the only
  // red circle), or "" when no name does.
  std::string name(size_t i, Rng& rng) const {
    const SceneObject& o = s.objects[i];
    const bool shape_unique = count(-1, o.shape) == 1, combo_unique = count(o.colour, o.shape) == 1;
    if (shape_unique && (!combo_unique || rng.below(2))) return shape_name(o.shape);
    if (combo_unique) return combo(o);
    return "";
  }
};

constexpr const char* kTypes[] = {"colour", "shape", "count", "position", "relation", "existence", "text"};
constexpr int kQuota[] = {2, 2, 2, 1, 2, 2, 2};

std::vector<QaPair> colour_questions(const SceneFacts& f) {
  static const std::vector<std::string> t = {"What colour is the {}?", "What color is the {}?",
                                             "What is the colour of the {}?",
                                             "Which colour does the {} have?"};
  std::vector<QaPair> out;
  for (const SceneObject& o : f.s.objects)
    if (f.count(-1, o.shape) == 1)
      for (const std::string& q : t) {
        std::string text = q;
        text.replace(text.find("{}"), 2, shape_name(o.shape));
        out.push_back({text, colour_name(o.colour), "colour"});
      }
  return out;
}

std::vector<QaPair> shape_questions(const SceneFacts& f) {
  std::vector<QaPair> out;
  for (const SceneObject& o : f.s.objects)
    if (f.count(o.colour, -1) == 1) {
      const std::string c = colour_name(o.colour);
      for (const std::string& q : {"What shape is the " + c + " object?", "Which shape is " + c + "?",
                                   "What is the shape of the " + c + " object?"})
        out.push_back({q, shape_name(o.shape), "shape"});
    }
  return out;
}

std::vector<QaPair> count_questions(const SceneFacts& f, Rng& rng) {
  std::vector<QaPair> out;
  auto add = [&](int colour, int shape) {
    const std::string n = std::to_string(f.count(colour, shape));
    if (colour >= 0 && shape >= 0)
      out.push_back(
          {std::string("How many ") + colour_name(colour) + " " + shape_plural(shape) + " are there?", n,
           "count"});
    else if (shape >= 0)
      out.push_back({std::string("How many ") + shape_plural(shape) + " are in the image?", n, "count"});
    else if (colour >= 0)
      out.push_back({std::string("How many ") + colour_name(colour) + " objects are there?", n, "count"});
    else
      out.push_back(
          {rng.below(2) ? "How many objects are there?" : "How many shapes are in the image?", n, "count"});
  };
  for (const SceneObject& o : f.s.objects) {
    add(o.colour, o.shape);
    add(-1, o.shape);
    add(o.colour, -1);
  }
  add(-1, -1);
  add(-1, -1);
  add(int(rng.below(kNumColours)), int(rng.below(kNumShapes)));  // usually absent: "0"
  add(int(rng.below(kNumColours)), -1);
  return out;
}

std::vector<QaPair> position_questions(const SceneFacts& f, Rng& rng) {
  std::vector<QaPair> out;
  const double N = f.s.size, margin = 0.15 * N;
  for (size_t i = 0; i < f.s.objects.size(); ++i) {
    const SceneObject& o = f.s.objects[i];
    const std::string name = f.name(i, rng);
    if (name.empty()) continue;
    if (std::abs(o.center_x() - N / 2) >= margin)
      out.push_back({"Is the " + name + " on the left or the right side of the image?",
                     o.center_x() < N / 2 ? "left" : "right", "position"});
    if (std::abs(o.center_y() - N / 2) >= margin)
      out.push_back({"Is the " + name + " in the top or the bottom half of the image?",
                     o.center_y() < N / 2 ? "top" : "bottom", "position"});
  }
  return out;
}

std::vector<QaPair> relation_questions(const SceneFacts& f, Rng& rng) {
  std::vector<QaPair> out;
  const int gap = std::max(2, int(0.05 * f.s.size));  // bboxes this far apart on the axis asked about
  const auto& objs = f.s.objects;
  for (size_t i = 0; i < objs.size(); ++i)
    for (size_t j = 0; j < objs.size(); ++j) {
      if (i == j) continue;
      const std::string a = f.name(i, rng), b = f.name(j, rng);
      if (a.empty() || b.empty() || a == b) continue;
      const SceneObject &A = objs[i], &B = objs[j];
      const bool left = A.x1 + gap <= B.x0, right = B.x1 + gap <= A.x0;
      const bool above = A.y1 + gap <= B.y0, below = B.y1 + gap <= A.y0;
      if (left || right) {
        const bool ask_left = rng.below(2);
        out.push_back({"Is the " + a + " to the " + (ask_left ? "left" : "right") + " of the " + b + "?",
                       (ask_left ? left : right) ? "yes" : "no", "relation"});
      }
      if (above || below) {
        const bool ask_above = rng.below(2);
        out.push_back({"Is the " + a + " " + (ask_above ? "above" : "below") + " the " + b + "?",
                       (ask_above ? above : below) ? "yes" : "no", "relation"});
      }
    }
  return out;
}

// Existence questions come in three forms: "Is there a red circle", "Is there anything red", "Are there any
// circles", each with its own pools of "yes" and "no" questions. A scene is asked one "yes" and one "no" of the
// same form, so every form is half "yes". (Drawing from pools of all forms at once made "Is there anything red"
// 77% "yes", since that form is a large part of a scene's "yes" pool and a small part of its "no" pool: a prior
// a model can sit on without looking at the image.)
struct ExistencePools {
  std::vector<QaPair> yes, no;
};
std::vector<ExistencePools> existence_questions(const SceneFacts& f) {
  std::vector<ExistencePools> forms(3);
  auto add = [&](ExistencePools& form, bool present, std::string question) {
    (present ? form.yes : form.no).push_back({std::move(question), present ? "yes" : "no", "existence"});
  };
  for (int c = 0; c < kNumColours; ++c) {
    for (int s = 0; s < kNumShapes; ++s) {
      const std::string name = std::string(colour_name(c)) + " " + shape_name(s);
      add(forms[0], f.count(c, s) > 0, "Is there " + article(name) + " in the image?");
    }
    add(forms[1], f.count(c, -1) > 0, std::string("Is there anything ") + colour_name(c) + " in the image?");
  }
  for (int s = 0; s < kNumShapes; ++s)
    add(forms[2], f.count(-1, s) > 0, std::string("Are there any ") + shape_plural(s) + " in the image?");
  return forms;
}

std::vector<QaPair> text_questions(const SceneFacts& f, Rng& rng) {
  std::vector<QaPair> out;
  int labelled = 0;
  for (size_t i = 0; i < f.s.objects.size(); ++i) {
    const SceneObject& o = f.s.objects[i];
    if (o.text.empty()) continue;
    ++labelled;
    const std::string name = f.name(i, rng);
    if (!name.empty()) out.push_back({"What is written on the " + name + "?", o.text, "text"});
  }
  if (labelled == 1)
    for (const SceneObject& o : f.s.objects)
      if (!o.text.empty()) out.push_back({"What is written in the image?", o.text, "text"});
  return out;
}

void take(std::vector<QaPair>& pool, int k, Rng& rng, std::vector<QaPair>& out) {
  shuffle(pool, rng);
  std::vector<std::string> seen;
  for (const QaPair& q : pool) {
    if (k == 0) break;
    if (std::find(seen.begin(), seen.end(), q.question) != seen.end()) continue;
    seen.push_back(q.question);
    out.push_back(q);
    --k;
  }
}

// Like take, but first draws an answer uniformly among the pool's distinct answers, then a question with it:
// without this, most count questions would be answered "1".
void take_balanced(std::vector<QaPair>& pool, int k, Rng& rng, std::vector<QaPair>& out) {
  std::vector<std::string> seen;
  for (const QaPair& q : out) seen.push_back(q.question);
  while (k > 0) {
    std::vector<std::string> answers;
    for (const QaPair& q : pool)
      if (std::find(seen.begin(), seen.end(), q.question) == seen.end() &&
          std::find(answers.begin(), answers.end(), q.answer) == answers.end())
        answers.push_back(q.answer);
    if (answers.empty()) return;
    const std::string want = pick(answers, rng);
    std::vector<const QaPair*> with;
    for (const QaPair& q : pool)
      if (q.answer == want && std::find(seen.begin(), seen.end(), q.question) == seen.end())
        with.push_back(&q);
    const QaPair& q = *pick(with, rng);
    seen.push_back(q.question);
    out.push_back(q);
    --k;
  }
}

}  // namespace

std::vector<QaPair> make_questions(const Scene& scene, const ShapesOptions& opt) {
  Rng rng(shapes_key(opt, scene.index, 3));
  SceneFacts f(scene);
  std::vector<QaPair> out;
  for (int t = 0; t < 7; ++t) {
    const std::string type = kTypes[t];
    std::vector<QaPair> pool;
    if (type == "colour")
      pool = colour_questions(f);
    else if (type == "shape")
      pool = shape_questions(f);
    else if (type == "count")
      pool = count_questions(f, rng);
    else if (type == "position")
      pool = position_questions(f, rng);
    else if (type == "relation")
      pool = relation_questions(f, rng);
    else if (type == "text")
      pool = opt.text ? text_questions(f, rng) : std::vector<QaPair>{};
    else {  // existence: one yes and one no, in one form drawn among those that have both
      std::vector<ExistencePools> forms;
      for (ExistencePools& form : existence_questions(f))
        if (!form.yes.empty() && !form.no.empty()) forms.push_back(std::move(form));
      if (forms.empty()) continue;
      ExistencePools& form = forms[rng.below(forms.size())];
      take(form.yes, 1, rng, out);
      take(form.no, 1, rng, out);
      continue;
    }
    if (type == "count")
      take_balanced(pool, kQuota[t], rng, out);
    else
      take(pool, kQuota[t], rng, out);
  }
  return out;
}

std::vector<std::string> make_captions(const Scene& scene, const ShapesOptions& opt) {
  Rng rng(shapes_key(opt, scene.index, 4));
  // Objects left to right; unlabelled objects of one colour and shape are grouped ("two red circles").
  std::vector<const SceneObject*> objs;
  for (const SceneObject& o : scene.objects) objs.push_back(&o);
  std::stable_sort(objs.begin(), objs.end(), [](auto* a, auto* b) { return a->x0 < b->x0; });
  struct Group {
    const SceneObject* first;
    size_t n;
  };
  std::vector<Group> groups;
  for (const SceneObject* o : objs) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const Group& g) {
      return o->text.empty() && g.first->text.empty() && g.first->colour == o->colour &&
             g.first->shape == o->shape;
    });
    if (it != groups.end())
      ++it->n;
    else
      groups.push_back({o, 1});
  }
  auto phrase = [&](const Group& g, bool with_size) {
    const SceneObject& o = *g.first;
    std::string p;
    if (g.n == 1) {
      p = article((with_size ? std::string(size_name(o.size)) + " " : "") + combo(o));
      if (!o.text.empty()) p += (rng.below(2) ? " labelled " : " with the text ") + o.text;
    } else {
      p = std::string(number_word(g.n)) + " " + colour_name(o.colour) + " " + shape_plural(o.shape);
    }
    return p;
  };
  auto list = [&](bool with_size) {
    std::vector<std::string> items;
    for (const Group& g : groups) items.push_back(phrase(g, with_size));
    return join_list(items);
  };
  const size_t n = scene.objects.size();
  const std::string what = n == 1 ? "object" : "objects";
  const std::string bg = scene.gradient ? "a gradient background" : "a plain background";
  std::vector<std::string> all = {
      capitalise(list(false)) + ".",
      std::string(n == 1 ? "There is " : "There are ") + number_word(n) + " " + what +
          " in the image: " + list(false) + ".",
      capitalise(list(true)) + " on " + bg + ".",
      "An image showing " + list(true) + ".",
      "A picture of " + list(false) + " on " + bg + ".",
  };
  if (n >= 2 && n <= 4) all.push_back("From left to right: " + list(false) + ".");
  shuffle(all, rng);
  all.resize(3);
  return all;
}

void PopeStats::add(const Scene& scene) {
  std::vector<int> present;
  for (const SceneObject& o : scene.objects) {
    const int p = pair_index(o.colour, o.shape);
    if (std::find(present.begin(), present.end(), p) == present.end()) present.push_back(p);
  }
  for (int p : present) {
    ++freq[size_t(p)];
    for (int q : present)
      if (q != p) ++cooc[size_t(p)][size_t(q)];
  }
}

std::vector<PopeProbe> make_pope(const Scene& scene, const PopeStats& stats, const ShapesOptions& opt) {
  Rng rng(shapes_key(opt, scene.index, 5));
  std::vector<int> present, absent;
  for (const SceneObject& o : scene.objects) {
    const int p = pair_index(o.colour, o.shape);
    if (std::find(present.begin(), present.end(), p) == present.end()) present.push_back(p);
  }
  for (int p = 0; p < PopeStats::kPairs; ++p)
    if (std::find(present.begin(), present.end(), p) == present.end()) absent.push_back(p);
  shuffle(present, rng);
  const size_t k = std::min<size_t>(3, present.size());
  std::vector<int> positives(present.begin(), present.begin() + ptrdiff_t(k));

  auto probe = [](int p, bool yes, const char* split) {
    const std::string name = std::string(colour_name(p / kNumShapes)) + " " + shape_name(p % kNumShapes);
    return PopeProbe{"Is there " + article(name) + " in the image?", yes ? "yes" : "no", split,
                     p / kNumShapes, p % kNumShapes};
  };
  std::vector<PopeProbe> out;
  for (const char* split : {"random", "popular", "adversarial"}) {
    std::vector<int> cand = absent;
    shuffle(cand, rng);  // random order; also the tie-break of the rankings below
    const std::string sp = split;
    if (sp == "popular") {
      std::stable_sort(cand.begin(), cand.end(),
                       [&](int a, int b) { return stats.freq[size_t(a)] > stats.freq[size_t(b)]; });
    } else if (sp == "adversarial") {
      auto similar = [&](int a) {
        for (int p : present)
          if (a / kNumShapes == p / kNumShapes || a % kNumShapes == p % kNumShapes) return true;
        return false;
      };
      auto score = [&](int a) {
        int64_t s = 0;
        for (int p : present) s += stats.cooc[size_t(a)][size_t(p)];
        return s;
      };
      std::stable_sort(cand.begin(), cand.end(), [&](int a, int b) {
        const bool sa = similar(a), sb = similar(b);
        if (sa != sb) return sa;
        return score(a) > score(b);
      });
    }
    std::vector<PopeProbe> probes;
    for (size_t i = 0; i < k; ++i) {
      probes.push_back(probe(positives[i], true, split));
      probes.push_back(probe(cand[i], false, split));
    }
    shuffle(probes, rng);
    out.insert(out.end(), probes.begin(), probes.end());
  }
  return out;
}

ShapesSummary write_shapes_dataset(const std::string& dir, const ShapesOptions& opt,
                                   const std::function<void(int64_t, int64_t)>& progress) {
  validate(opt);
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "images", ec);
  IRIS_CHECK(!ec, "shapes: cannot create ", (fs::path(dir) / "images").string(), ": ", ec.message());

  // Pass 1: scene statistics for POPE (scenes are cheap to make; only pass 2 renders).
  PopeStats stats;
  for (int64_t i = 0; i < opt.n; ++i) stats.add(make_scene(opt, i));

  auto open = [&](const char* name) {
    std::ofstream f(fs::path(dir) / name, std::ios::binary | std::ios::trunc);
    IRIS_CHECK(f.good(), "shapes: cannot write ", (fs::path(dir) / name).string());
    return f;
  };
  std::ofstream llava = open("llava.json"), caps = open("captions.jsonl"), pope = open("pope.jsonl"),
                scenes = open("scenes.jsonl"), regions = open("regions.jsonl"), text = open("llava_text.json");
  llava << "[\n";
  text << "[\n";
  bool first_record = true, first_text = true;
  static const std::vector<std::string> caption_prompts = {
      "Describe the image briefly.", "Give a short description of the image.", "What does this image show?",
      "Write a short caption for this image.", "Summarize the picture in one sentence."};
  const std::string suffix = "\n" + std::string(kShortAnswerPrompt), image_marker = "<image>\n";

  ShapesSummary sum;
  for (int64_t i = 0; i < opt.n; ++i) {
    const Scene s = make_scene(opt, i);
    vision::save_png((fs::path(dir) / s.image).string(), render_scene(s, opt));
    ++sum.images;
    sum.objects += int64_t(s.objects.size());

    json objs = json::array();
    for (const SceneObject& o : s.objects)
      objs.push_back({{"shape", shape_name(o.shape)},
                      {"colour", colour_name(o.colour)},
                      {"size", size_name(o.size)},
                      {"bbox", {o.x0, o.y0, o.x1, o.y1}},
                      {"center", {o.center_x(), o.center_y()}},
                      {"inside", {o.inside_x, o.inside_y}},
                      {"text", o.text},
                      {"text_scale", o.text_scale}});
    json bg = {{"kind", s.gradient ? "gradient" : "flat"},
               {"from", s.bg_from},
               {"to", s.bg_to},
               {"direction", !s.gradient           ? "none"
                             : s.gradient_dir == 0 ? "horizontal"
                             : s.gradient_dir == 1 ? "vertical"
                                                   : "diagonal"},
               {"noise", s.noise}};
    scenes << json{{"image", s.image}, {"index", s.index}, {"width", s.size},
                   {"height", s.size}, {"background", bg}, {"objects", objs}}
                  .dump()
           << "\n";

    json regs = json::array();  // one phrase per object, for region-level contrastive pretraining
    for (const SceneObject& o : s.objects)
      regs.push_back({{"bbox", {o.x0, o.y0, o.x1, o.y1}},
                      {"text", str_cat(size_name(o.size), " ", colour_name(o.colour), " ", shape_name(o.shape))}});
    regions << json{{"image", s.image}, {"regions", regs}}.dump() << "\n";

    Rng rng(shapes_key(opt, i, 6));
    int conv = 0;
    auto record = [&](const json& turns) {  // writes a llava.json record, returns its id
      char id[96];
      std::snprintf(id, sizeof id, "%s_%06lld_%d", opt.split.c_str(), static_cast<long long>(i), conv++);
      llava << (first_record ? "" : ",\n") << json{{"id", id}, {"image", s.image}, {"conversations", turns}}.dump();
      first_record = false;
      ++sum.conversations;
      return std::string(id);
    };
    const std::vector<std::string> captions = make_captions(s, opt);
    record(json::array({{{"from", "human"}, {"value", image_marker + pick(caption_prompts, rng)}},
                        {{"from", "gpt"}, {"value", pick(captions, rng)}, {"type", "caption"}}}));
    for (const std::string& c : captions) {
      caps << json{{"image", s.image}, {"caption", c}}.dump() << "\n";
      ++sum.captions;
    }
    // llava_text.json: every question conversation again, with one of the scene's captions in place of the image, so
    // that a language model can learn to answer from a description before it sees images (its own random stream:
    // the other files do not change).
    Rng text_rng(shapes_key(opt, i, 7));
    auto text_record = [&](const std::string& id, json turns) {
      std::string& first = turns[0]["value"].get_ref<std::string&>();
      first = pick(captions, text_rng) + "\n" + first.substr(image_marker.size());
      text << (first_text ? "" : ",\n") << json{{"id", id}, {"conversations", turns}}.dump();
      first_text = false;
    };
    std::vector<QaPair> qa = make_questions(s, opt);
    shuffle(qa, rng);
    for (size_t q = 0; q < qa.size();) {  // conversations of 1 to max_turns turns
      const size_t len = std::min(qa.size() - q, size_t(1 + rng.below(uint64_t(opt.max_turns))));
      json turns = json::array();
      for (size_t t = 0; t < len; ++t, ++q) {
        // Half the questions carry the short-answer instruction, as LLaVA-1.5's VQA data; the others have the same
        // short answer, so that a plain question ("How many red circles are there?") is answered, not captioned.
        const bool instructed = rng.below(2) == 0;
        turns.push_back({{"from", "human"},
                         {"value", (t == 0 ? image_marker : "") + qa[q].question + (instructed ? suffix : "")}});
        turns.push_back({{"from", "gpt"}, {"value", qa[q].answer}, {"type", qa[q].type}});
        ++sum.questions;
        ++sum.questions_by_type[qa[q].type];
      }
      text_record(record(turns), turns);
    }
    for (const PopeProbe& p : make_pope(s, stats, opt)) {
      pope << json{{"image", s.image},
                   {"question", p.question},
                   {"answer", p.answer},
                   {"split", p.split},
                   {"object", std::string(colour_name(p.colour)) + " " + shape_name(p.shape)}}
                  .dump()
           << "\n";
      ++sum.pope;
    }
    if (progress && ((i + 1) % 100 == 0 || i + 1 == opt.n)) progress(i + 1, opt.n);
  }
  llava << "\n]\n";
  text << "\n]\n";
  for (auto* f : {&llava, &caps, &pope, &scenes, &regions, &text}) {
    f->flush();
    IRIS_CHECK(f->good(), "shapes: writing into ", dir, " failed (disk full?)");
  }

  json colours = json::object();
  for (int c = 0; c < kNumColours; ++c) colours[colour_name(c)] = colour_rgb(c);
  json shapes = json::array(), sizes = json::array();
  for (int s = 0; s < kNumShapes; ++s) shapes.push_back(shape_name(s));
  for (int s = 0; s < kNumSizes; ++s) sizes.push_back(size_name(s));
  json meta = {
      {"generator", "iris data shapes"},
      {"version", 1},
      {"seed", opt.seed},
      {"split", opt.split},
      {"min_size", opt.min_size},
      {"max_size", opt.max_size},
      {"max_turns", opt.max_turns},
      {"text", opt.text},
      {"counts",
       {{"images", sum.images},
        {"objects", sum.objects},
        {"conversations", sum.conversations},
        {"questions", sum.questions},
        {"questions_by_type", sum.questions_by_type},
        {"captions", sum.captions},
        {"pope", sum.pope}}},
      {"vocab",
       {{"shapes", shapes},
        {"colours", colours},
        {"sizes", sizes},
        {"words", label_words()},
        {"question_types", kTypes},
        {"pope_splits", {"random", "popular", "adversarial"}}}},
      {"prompts", {{"short_answer", std::string(kShortAnswerPrompt)}, {"caption", caption_prompts}}},
      {"files",
       {{"images", "images/NNNNNN.png"},
        {"llava", "llava.json"},
        {"llava_text", "llava_text.json"},
        {"captions", "captions.jsonl"},
        {"pope", "pope.jsonl"},
        {"scenes", "scenes.jsonl"}}},
  };
  std::ofstream mf = open("meta.json");
  mf << meta.dump(2) << "\n";
  mf.flush();
  IRIS_CHECK(mf.good(), "shapes: writing ", dir, "/meta.json failed");
  return sum;
}

}  // namespace iris::data
