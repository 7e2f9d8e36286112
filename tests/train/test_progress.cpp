// What the user sees during training: the progress bar (TTY redraw and plain lines), the metrics JSONL log
// (fields, flushing, resume), and the loss plots (SVG checked with a small XML parser; PNG decoded back).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>

#include "io/file.h"
#include "test_util.h"
#include "train/metrics.h"
#include "train/progress.h"
#include "vision/image.h"

using namespace iris;
using namespace iris::train;
namespace fs = std::filesystem;

namespace {

StepMetrics metrics_at(int64_t step) {
  StepMetrics m;
  m.step = step;
  m.loss = 3.0 / double(step + 1);
  m.lr = 1e-4 * double(step);
  m.grad_norm = 0.5 + double(step) * 0.01;
  m.tokens = step * 512;
  m.tokens_per_s = 1234.5;
  m.elapsed_s = double(step) * 0.25;
  return m;
}

// Everything written to a FILE* (a tmpfile) so far.
std::string contents(std::FILE* f) {
  std::fflush(f);
  long n = std::ftell(f);
  std::string s(size_t(std::max(n, 0L)), '\0');
  std::rewind(f);
  size_t got = std::fread(s.data(), 1, s.size(), f);
  s.resize(got);
  std::fseek(f, 0, SEEK_END);
  return s;
}

// ---- a small XML parser: enough to say that the SVG is well-formed and to read it back ----

struct XmlNode {
  std::string name;
  std::map<std::string, std::string> attrs;
  std::vector<XmlNode> children;
  std::string text;
};

class XmlParser {
 public:
  explicit XmlParser(const std::string& s) : s_(s) {}

  XmlNode parse_document() {
    skip_space();
    if (s_.compare(i_, 5, "<?xml") == 0) {
      size_t e = s_.find("?>", i_);
      if (e == std::string::npos) fail("unterminated XML declaration");
      i_ = e + 2;
    }
    skip_space();
    XmlNode root = parse_element();
    skip_space();
    if (i_ != s_.size()) fail("content after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& why) {
    throw std::runtime_error(why + " at offset " + std::to_string(i_));
  }
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  std::string parse_name() {
    size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '-' ||
                              s_[i_] == '_' || s_[i_] == ':' || s_[i_] == '.'))
      ++i_;
    if (b == i_) fail("expected a name");
    return s_.substr(b, i_ - b);
  }
  // Text up to `stop`, with entity references resolved; a raw '<' or a bad '&' is an error.
  std::string parse_text(char stop) {
    std::string out;
    while (i_ < s_.size() && s_[i_] != stop) {
      char c = s_[i_];
      if (c == '<' && stop != '<') fail("raw '<' in an attribute");
      if (c == '&') {
        size_t e = s_.find(';', i_);
        if (e == std::string::npos) fail("unterminated entity");
        std::string ent = s_.substr(i_ + 1, e - i_ - 1);
        static const std::map<std::string, char> known{
            {"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
        if (known.count(ent))
          out += known.at(ent);
        else if (!ent.empty() && ent[0] == '#')
          out += '?';
        else
          fail("unknown entity &" + ent + ";");
        i_ = e + 1;
        continue;
      }
      out += c;
      ++i_;
    }
    return out;
  }
  XmlNode parse_element() {
    if (i_ >= s_.size() || s_[i_] != '<') fail("expected '<'");
    ++i_;
    XmlNode n;
    n.name = parse_name();
    for (;;) {
      skip_space();
      if (i_ >= s_.size()) fail("unterminated tag");
      if (s_.compare(i_, 2, "/>") == 0) {
        i_ += 2;
        return n;
      }
      if (s_[i_] == '>') {
        ++i_;
        break;
      }
      std::string key = parse_name();
      skip_space();
      if (i_ >= s_.size() || s_[i_] != '=') fail("expected '=' after " + key);
      ++i_;
      skip_space();
      if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) fail("unquoted attribute " + key);
      char q = s_[i_++];
      std::string v = parse_text(q);
      if (i_ >= s_.size()) fail("unterminated attribute " + key);
      ++i_;
      if (!n.attrs.emplace(key, v).second) fail("duplicate attribute " + key);
    }
    for (;;) {
      n.text += parse_text('<');
      if (i_ >= s_.size()) fail("unclosed element <" + n.name + ">");
      if (s_.compare(i_, 2, "</") == 0) {
        i_ += 2;
        std::string close = parse_name();
        if (close != n.name) fail("</" + close + "> closes <" + n.name + ">");
        skip_space();
        if (i_ >= s_.size() || s_[i_] != '>') fail("expected '>'");
        ++i_;
        return n;
      }
      n.children.push_back(parse_element());
    }
  }

  const std::string& s_;
  size_t i_ = 0;
};

void collect(const XmlNode& n, const std::string& name, std::vector<const XmlNode*>& out) {
  if (n.name == name) out.push_back(&n);
  for (const auto& c : n.children) collect(c, name, out);
}

std::vector<std::pair<double, double>> parse_points(const std::string& s) {
  std::vector<std::pair<double, double>> pts;
  std::istringstream in(s);
  for (std::string tok; in >> tok;) {
    size_t comma = tok.find(',');
    EXPECT_NE(comma, std::string::npos) << tok;
    if (comma == std::string::npos) break;
    pts.emplace_back(std::stod(tok.substr(0, comma)), std::stod(tok.substr(comma + 1)));
  }
  return pts;
}

}  // namespace

// ---- metrics log ----

TEST(MetricsLog, LinesParseAndCarryTheFields) {
  const std::string path = test::temp_dir() + "/metrics.jsonl";
  {
    MetricsLog log(path);
    for (int64_t s = 1; s <= 5; ++s) {
      log.log(metrics_at(s), {{"loss_caption", 1.5}});
      // flushed line by line: a reader (or a crash) sees every line logged so far
      std::string text = test::read_file(path);
      EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), s);
    }
  }
  std::istringstream in(test::read_file(path));
  int64_t expect = 1;
  for (std::string line; std::getline(in, line); ++expect) {
    nlohmann::json j = nlohmann::json::parse(line);
    for (const char* key :
         {"step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s", "loss_caption"})
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
    EXPECT_EQ(j["step"].get<int64_t>(), expect);
    EXPECT_DOUBLE_EQ(j["loss"].get<double>(), metrics_at(expect).loss);  // round-trips exactly
    EXPECT_EQ(j["tokens"].get<int64_t>(), expect * 512);
  }
  EXPECT_EQ(expect, 6);
  auto back = MetricsLog::read(path);
  ASSERT_EQ(back.size(), 5u);
  EXPECT_EQ(back[2].lr, metrics_at(3).lr);
  EXPECT_EQ(back[4].elapsed_s, metrics_at(5).elapsed_s);
}

TEST(MetricsLog, ResumeDropsStepsAfterTheCheckpoint) {
  const std::string path = test::temp_dir() + "/resume.jsonl";
  {
    MetricsLog log(path);
    for (int64_t s = 1; s <= 9; ++s) log.log(metrics_at(s));
  }
  {
    std::string text = test::read_file(path);
    test::write_file(path, text + "{\"step\": 10, \"loss\": 0.");  // torn by a kill
  }
  EXPECT_EQ(MetricsLog::read(path).size(), 9u);  // the torn line is skipped
  {
    MetricsLog log(path, 6);  // resumed from the checkpoint of step 6
    for (int64_t s = 7; s <= 8; ++s) log.log(metrics_at(s));
  }
  auto back = MetricsLog::read(path);
  ASSERT_EQ(back.size(), 8u);
  for (size_t i = 0; i < back.size(); ++i) EXPECT_EQ(back[i].step, int64_t(i) + 1);
  // A fresh run starts the file over; nan is written as null and read back as nan.
  {
    MetricsLog log(path);
    StepMetrics m = metrics_at(1);
    m.loss = NAN;
    log.log(m);
  }
  back = MetricsLog::read(path);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(std::isnan(back[0].loss));
  EXPECT_THROW(MetricsLog(test::temp_dir() + "/no/such/folder/m.jsonl"), Error);
  EXPECT_THROW(step_metrics_from_json(nlohmann::json{{"step", 1}}), Error);
}

// ---- progress bar ----

TEST(ProgressBar, PlainLinesEveryNSteps) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressOptions o;
    o.out = f;
    o.tty = 0;
    o.every = 5;
    ProgressBar bar(12, 0, o);
    for (int64_t s = 1; s <= 12; ++s) bar.update(metrics_at(s));
    bar.message("saved checkpoint step-00000012");
  }
  std::string out = contents(f);
  std::fclose(f);
  EXPECT_EQ(out.find('\r'), std::string::npos);
  std::istringstream in(out);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u) << out;  // steps 1, 5, 10, 12 and the message
  EXPECT_EQ(lines[0].rfind("step  1/12", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("step  5/12", 0), 0u) << lines[1];
  EXPECT_EQ(lines[2].rfind("step 10/12", 0), 0u) << lines[2];
  EXPECT_EQ(lines[3].rfind("step 12/12", 0), 0u) << lines[3];
  EXPECT_EQ(lines[4], "saved checkpoint step-00000012");
  for (const char* part :
       {"loss 0.2308", "lr 1.20e-03", "1234 tok/s", "100%", "ETA", "[####################]"})
    EXPECT_NE(lines[3].find(part), std::string::npos) << part << " in " << lines[3];
  EXPECT_NE(lines[0].find("[#..................."), std::string::npos) << lines[0];
}

// A note (other metrics, e.g. retrieval accuracy) ends the line, plain or redrawn.
TEST(ProgressBar, NoteEndsTheLine) {
  for (int tty : {0, 1}) {
    std::FILE* f = std::tmpfile();
    ASSERT_NE(f, nullptr);
    {
      ProgressOptions o;
      o.out = f;
      o.tty = tty;
      o.min_redraw_s = 0;
      ProgressBar bar(2, 0, o);
      bar.update(metrics_at(1), "acc i2t 0.50");
      bar.update(metrics_at(2));
    }
    std::string out = contents(f);
    std::fclose(f);
    const size_t at = out.find(" | acc i2t 0.50");
    ASSERT_NE(at, std::string::npos) << out;
    EXPECT_EQ(out.find("acc", at + 4), std::string::npos) << "the note is not kept for the next step: " << out;
    EXPECT_EQ(out[at + std::strlen(" | acc i2t 0.50")], tty ? '\r' : '\n') << out;
  }
}

TEST(ProgressBar, TtyRedrawsInPlace) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressOptions o;
  o.out = f;
  o.tty = 1;
  o.min_redraw_s = 0;
  ProgressBar bar(3, 0, o);
  EXPECT_TRUE(bar.tty());
  bar.update(metrics_at(1));
  bar.update(metrics_at(2));
  std::string out = contents(f);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 2);
  EXPECT_EQ(out.find('\n'), std::string::npos);  // still on one line
  bar.message("eval: accuracy 0.5");
  out = contents(f);
  EXPECT_NE(out.find("\reval: accuracy 0.5"), std::string::npos);
  EXPECT_NE(out.rfind("step 2/3"), std::string::npos);
  EXPECT_GT(out.rfind("step 2/3"), out.find("eval: accuracy"));
  bar.update(metrics_at(3));
  bar.finish();
  out = contents(f);
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 2);  // the message's and finish()'s
  std::fclose(f);
}

TEST(ProgressBar, RateLimitAndEta) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressOptions o;
  o.out = f;
  o.tty = 1;
  o.min_redraw_s = 3600;  // only the first update and the last step draw
  {
    ProgressBar bar(100, 40, o);  // resumed at step 40
    for (int64_t s = 41; s <= 100; ++s) bar.update(metrics_at(s));
  }
  std::string out = contents(f);
  std::fclose(f);
  EXPECT_EQ(std::count(out.begin(), out.end(), '\r'), 2) << out;
  EXPECT_NE(out.find("step  41/100"), std::string::npos);
  EXPECT_NE(out.find("step 100/100"), std::string::npos);
  EXPECT_EQ(ProgressBar::format_duration(42), "42s");
  EXPECT_EQ(ProgressBar::format_duration(205), "03:25");
  EXPECT_EQ(ProgressBar::format_duration(3723), "1:02:03");
  EXPECT_EQ(ProgressBar::format_duration(-1), "--:--");
  o.out = stderr;  // (f is closed; format() writes nothing)
  ProgressBar bar(10, 0, o);
  std::string line = bar.format(metrics_at(5), 30);
  EXPECT_NE(line.find("ETA 30s"), std::string::npos) << line;
  EXPECT_NE(bar.format(metrics_at(5), -1).find("ETA --:--"), std::string::npos);
}

// ---- plots ----

TEST(LossPlot, SvgIsWellFormedWithOnePointPerStep) {
  std::vector<int64_t> steps;
  std::vector<double> losses;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> noise(-0.3, 0.3);
  for (int64_t s = 1; s <= 250; ++s) {
    steps.push_back(s);
    losses.push_back(4.0 * std::exp(-double(s) / 60.0) + 1.0 + noise(rng));
  }
  const std::string path = test::temp_dir() + "/loss.svg";
  write_loss_plot_svg(path, steps, losses, "stage 1 <projector> & \"friends\"");
  const std::string svg = test::read_file(path);
  XmlNode root;
  ASSERT_NO_THROW(root = XmlParser(svg).parse_document()) << svg.substr(0, 400);
  EXPECT_EQ(root.name, "svg");
  EXPECT_EQ(root.attrs["xmlns"], "http://www.w3.org/2000/svg");
  std::vector<const XmlNode*> polylines, texts, lines;
  collect(root, "polyline", polylines);
  collect(root, "text", texts);
  collect(root, "line", lines);
  ASSERT_EQ(polylines.size(), 2u);
  std::map<std::string, std::vector<std::pair<double, double>>> pts;
  for (const XmlNode* p : polylines) pts[p->attrs.at("class")] = parse_points(p->attrs.at("points"));
  ASSERT_EQ(pts["raw"].size(), steps.size());
  ASSERT_EQ(pts["smoothed"].size(), steps.size());
  // x grows with the step, y grows downwards (SVG), everything inside the canvas
  for (size_t i = 1; i < steps.size(); ++i) EXPECT_GT(pts["raw"][i].first, pts["raw"][i - 1].first);
  for (auto [x, y] : pts["raw"]) {
    EXPECT_GE(x, 0);
    EXPECT_LE(x, 800);
    EXPECT_GE(y, 0);
    EXPECT_LE(y, 480);
  }
  EXPECT_GT(pts["smoothed"].back().second, pts["smoothed"].front().second);  // the loss falls: drawn lower
  // the smoothed line is smoother: smaller total vertical travel
  auto travel = [](const auto& v) {
    double t = 0;
    for (size_t i = 1; i < v.size(); ++i) t += std::fabs(v[i].second - v[i - 1].second);
    return t;
  };
  EXPECT_LT(travel(pts["smoothed"]), travel(pts["raw"]) / 3);
  // title (escaped, read back), axis labels and tick labels
  std::vector<std::string> all;
  for (const XmlNode* t : texts) all.push_back(t->text);
  auto has = [&](const std::string& s) { return std::find(all.begin(), all.end(), s) != all.end(); };
  EXPECT_TRUE(has("stage 1 <projector> & \"friends\""));
  EXPECT_TRUE(has("step"));
  EXPECT_TRUE(has("loss"));
  EXPECT_TRUE(has("100"));
  EXPECT_TRUE(has("200"));
  EXPECT_GE(lines.size(), 10u);  // axes, ticks, grid
}

TEST(LossPlot, EdgeCases) {
  // NaN losses are left out of the raw line; one point and a flat curve still give valid files.
  std::string svg = loss_plot_svg({1, 2, 3, 4}, {1.0, NAN, 0.5, INFINITY}, "t");
  XmlNode root = XmlParser(svg).parse_document();
  std::vector<const XmlNode*> polylines;
  collect(root, "polyline", polylines);
  ASSERT_EQ(polylines.size(), 2u);
  EXPECT_EQ(parse_points(polylines[0]->attrs.at("points")).size(), 2u);
  for (const auto& [steps, losses] : std::vector<std::pair<std::vector<int64_t>, std::vector<double>>>{
           {{7}, {2.0}}, {{1, 2, 3}, {2.0, 2.0, 2.0}}, {{}, {}}}) {
    std::string s = loss_plot_svg(steps, losses, "x");
    EXPECT_NO_THROW(XmlParser(s).parse_document());
    EXPECT_EQ(s.find("nan"), std::string::npos);
    EXPECT_EQ(s.find("inf"), std::string::npos);
  }
  EXPECT_THROW(loss_plot_svg({1, 2}, {1.0}, "x"), Error);
  EXPECT_THROW(write_loss_plot_svg("/sys/iris-no/loss.svg", {1}, {1.0}, "x"), Error);
}

TEST(LossPlot, PngDecodesWithTheCurve) {
  std::vector<int64_t> steps;
  std::vector<double> losses;
  for (int64_t s = 0; s < 100; ++s) {
    steps.push_back(s);
    losses.push_back(5.0 - 0.04 * double(s));
  }
  const std::string path = test::temp_dir() + "/loss.png";
  PlotOptions o;
  o.width = 640;
  o.height = 400;
  write_loss_plot_png(path, steps, losses, "Loss", o);
  vision::Image img = vision::load_image(path);
  ASSERT_EQ(img.width, 640);
  ASSERT_EQ(img.height, 400);
  ASSERT_EQ(img.channels, 3);
  // The smoothed line's colour (#08519c) is drawn; the corner stays white.
  size_t blue = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      const uint8_t* p = img.row(y) + x * 3;
      blue += p[0] < 40 && p[1] > 60 && p[1] < 110 && p[2] > 130;
    }
  EXPECT_GT(blue, 500u);
  EXPECT_EQ(img.row(img.height - 1)[(img.width - 1) * 3], 255);
}
