// Metrics JSONL log and loss-curve plots (SVG by hand; PNG through a small rasterizer). See metrics.h.
#include "train/metrics.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <sstream>

#include "io/file.h"
#include "train/plot_font.h"
#include "vision/image.h"

namespace iris::train {

// ---- JSONL ----

nlohmann::json to_json(const StepMetrics& m) {
  nlohmann::json j;
  j["step"] = m.step;
  j["loss"] = m.loss;
  j["lr"] = m.lr;
  j["grad_norm"] = m.grad_norm;
  j["tokens"] = m.tokens;
  j["tokens_per_s"] = m.tokens_per_s;
  j["elapsed_s"] = m.elapsed_s;
  return j;
}

StepMetrics step_metrics_from_json(const nlohmann::json& j) {
  IRIS_CHECK(j.is_object(), "metrics: expected a JSON object, got ", j.type_name());
  auto num = [&](const char* key) -> double {
    IRIS_CHECK(j.contains(key), "metrics: missing field '", key, "'");
    if (j[key].is_null()) return NAN;  // nlohmann writes nan and inf as null
    IRIS_CHECK(j[key].is_number(), "metrics: field '", key, "' must be a number, got ", j[key].type_name());
    return j[key].get<double>();
  };
  auto integer = [&](const char* key) -> int64_t {
    IRIS_CHECK(j.contains(key) && j[key].is_number_integer(), "metrics: field '", key,
               "' must be an integer");
    return j[key].get<int64_t>();
  };
  StepMetrics m;
  m.step = integer("step");
  m.loss = num("loss");
  m.lr = num("lr");
  m.grad_norm = num("grad_norm");
  m.tokens = integer("tokens");
  m.tokens_per_s = num("tokens_per_s");
  m.elapsed_s = num("elapsed_s");
  return m;
}

MetricsLog::MetricsLog(const std::string& path, std::optional<int64_t> resume_step) : path_(path) {
  std::string kept;
  if (resume_step) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      std::istringstream in(io::read_file(path));
      for (std::string line; std::getline(in, line);) {
        try {
          auto j = nlohmann::json::parse(line);
          if (j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
              j["step"].get<int64_t>() <= *resume_step)
            kept += line + "\n";
        } catch (const nlohmann::json::exception&) {
          // a torn line from the killed run
        }
      }
    }
  }
  io::write_file_atomic(path, kept);
  f_ = std::fopen(path.c_str(), "ab");
  IRIS_CHECK(f_, "cannot open metrics file ", path, ": ", std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (f_) std::fclose(f_);
}

void MetricsLog::log(const StepMetrics& m, const nlohmann::json& more) {
  nlohmann::json j = to_json(m);
  if (more.is_object())
    for (auto it = more.begin(); it != more.end(); ++it) j[it.key()] = it.value();
  std::string line = j.dump() + "\n";
  bool ok = std::fwrite(line.data(), 1, line.size(), f_) == line.size() && std::fflush(f_) == 0;
  IRIS_CHECK(ok, "cannot write metrics file ", path_, ": ", std::strerror(errno));
}

std::vector<StepMetrics> MetricsLog::read(const std::string& path) {
  std::vector<StepMetrics> out;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return out;
  std::istringstream in(io::read_file(path));
  for (std::string line; std::getline(in, line);) {
    try {
      out.push_back(step_metrics_from_json(nlohmann::json::parse(line)));
    } catch (const std::exception&) {
      // torn or foreign line
    }
  }
  return out;
}

// ---- plot geometry, shared by the SVG and PNG writers ----

std::vector<double> smooth_losses(const std::vector<double>& losses, double smoothing) {
  std::vector<double> out(losses.size());
  double ema = 0, weight = 0, last = NAN;
  for (size_t i = 0; i < losses.size(); ++i) {
    if (std::isfinite(losses[i])) {
      ema = smoothing * ema + (1 - smoothing) * losses[i];
      weight = smoothing * weight + (1 - smoothing);
      last = ema / weight;  // debiased, as TensorBoard: the first points are not pulled towards 0
    }
    out[i] = last;
  }
  return out;
}

namespace {

struct Axis {
  double lo = 0, hi = 1;
  std::vector<double> ticks;
  double step = 1;
};

// "Nice" ticks: a step of 1, 2 or 5 times a power of ten giving about `target` intervals.
Axis nice_axis(double lo, double hi, int target, bool integer) {
  if (!(hi > lo)) {
    double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  double raw = (hi - lo) / target;
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  if (integer) step = std::max(1.0, std::round(step));
  Axis a;
  a.lo = std::floor(lo / step) * step;
  a.hi = std::ceil(hi / step) * step;
  a.step = step;
  for (double t = a.lo; t <= a.hi + step * 1e-9; t += step)
    a.ticks.push_back(std::fabs(t) < step * 1e-9 ? 0 : t);
  return a;
}

std::string tick_label(double v, double step) {
  char buf[32];
  if (std::fabs(v) >= 1e5 || (v != 0 && std::fabs(v) < 1e-3)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    int decimals = std::max(0, int(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 6), v);
  }
  return buf;
}

struct Plot {
  int w = 0, h = 0;
  double left = 70, right = 20, top = 40, bottom = 50;  // margins
  Axis x, y;
  std::vector<std::pair<double, double>> raw, smooth;  // pixel coordinates

  double px(double step) const { return left + (step - x.lo) / (x.hi - x.lo) * (w - left - right); }
  double py(double loss) const { return h - bottom - (loss - y.lo) / (y.hi - y.lo) * (h - top - bottom); }
};

Plot layout(const std::vector<int64_t>& steps, const std::vector<double>& losses, const PlotOptions& opt) {
  IRIS_CHECK(steps.size() == losses.size(), "loss plot: ", steps.size(), " steps but ", losses.size(),
             " losses");
  IRIS_CHECK(opt.width >= 200 && opt.height >= 150 && opt.width <= 10000 && opt.height <= 10000,
             "loss plot: size ", opt.width, "x", opt.height, " out of range (200x150 to 10000x10000)");
  Plot p;
  p.w = opt.width;
  p.h = opt.height;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  for (size_t i = 0; i < steps.size(); ++i) {
    xmin = std::min(xmin, double(steps[i]));
    xmax = std::max(xmax, double(steps[i]));
    if (std::isfinite(losses[i])) {
      ymin = std::min(ymin, losses[i]);
      ymax = std::max(ymax, losses[i]);
    }
  }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1;
  if (!std::isfinite(ymin)) ymin = 0, ymax = 1;
  p.x = nice_axis(xmin, xmax, 8, true);
  p.y = nice_axis(ymin, ymax, 6, false);
  size_t n = losses.size();
  // Default: an EMA time constant of n/40 steps (lag stays a small fraction of the x range).
  double s = opt.smoothing >= 0 ? std::min(opt.smoothing, 0.999)
                                : std::clamp(1.0 - 40.0 / double(std::max<size_t>(n, 1)), 0.0, 0.99);
  std::vector<double> sm = smooth_losses(losses, s);
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(losses[i])) p.raw.emplace_back(p.px(double(steps[i])), p.py(losses[i]));
    if (std::isfinite(sm[i])) p.smooth.emplace_back(p.px(double(steps[i])), p.py(sm[i]));
  }
  return p;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t' || c == '\n')
          out += c;  // XML 1.0 forbids the rest
    }
  }
  return out;
}

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::string points_attr(const std::vector<std::pair<double, double>>& pts) {
  std::string s;
  s.reserve(pts.size() * 16);
  for (size_t i = 0; i < pts.size(); ++i) {
    if (i) s += ' ';
    s += fmt(pts[i].first) + "," + fmt(pts[i].second);
  }
  return s;
}

constexpr const char* kRawColor = "#9ecae1";
constexpr const char* kSmoothColor = "#08519c";

}  // namespace

std::string loss_plot_svg(const std::vector<int64_t>& steps, const std::vector<double>& losses,
                          const std::string& title, const PlotOptions& opt) {
  Plot p = layout(steps, losses, opt);
  const double x0 = p.left, x1 = p.w - p.right, y0 = p.h - p.bottom, y1 = p.top;
  std::ostringstream o;
  o << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << p.w << "\" height=\"" << p.h
    << "\" viewBox=\"0 0 " << p.w << " " << p.h << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect x=\"0\" y=\"0\" width=\"" << p.w << "\" height=\"" << p.h << "\" fill=\"white\"/>\n"
    << "<text x=\"" << fmt((x0 + x1) / 2) << "\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">"
    << xml_escape(title) << "</text>\n";
  // grid and ticks
  o << "<g class=\"grid\" stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (double t : p.x.ticks)
    o << "<line x1=\"" << fmt(p.px(t)) << "\" y1=\"" << fmt(y0) << "\" x2=\"" << fmt(p.px(t)) << "\" y2=\""
      << fmt(y1) << "\"/>\n";
  for (double t : p.y.ticks)
    o << "<line x1=\"" << fmt(x0) << "\" y1=\"" << fmt(p.py(t)) << "\" x2=\"" << fmt(x1) << "\" y2=\""
      << fmt(p.py(t)) << "\"/>\n";
  o << "</g>\n<g class=\"axes\" stroke=\"black\" stroke-width=\"1\">\n"
    << "<line x1=\"" << fmt(x0) << "\" y1=\"" << fmt(y0) << "\" x2=\"" << fmt(x1) << "\" y2=\"" << fmt(y0)
    << "\"/>\n"
    << "<line x1=\"" << fmt(x0) << "\" y1=\"" << fmt(y0) << "\" x2=\"" << fmt(x0) << "\" y2=\"" << fmt(y1)
    << "\"/>\n";
  for (double t : p.x.ticks)
    o << "<line x1=\"" << fmt(p.px(t)) << "\" y1=\"" << fmt(y0) << "\" x2=\"" << fmt(p.px(t)) << "\" y2=\""
      << fmt(y0 + 5) << "\"/>\n";
  for (double t : p.y.ticks)
    o << "<line x1=\"" << fmt(x0 - 5) << "\" y1=\"" << fmt(p.py(t)) << "\" x2=\"" << fmt(x0) << "\" y2=\""
      << fmt(p.py(t)) << "\"/>\n";
  o << "</g>\n<g class=\"tick-labels\" fill=\"black\">\n";
  for (double t : p.x.ticks)
    o << "<text x=\"" << fmt(p.px(t)) << "\" y=\"" << fmt(y0 + 18) << "\" text-anchor=\"middle\">"
      << tick_label(t, p.x.step) << "</text>\n";
  for (double t : p.y.ticks)
    o << "<text x=\"" << fmt(x0 - 8) << "\" y=\"" << fmt(p.py(t) + 4) << "\" text-anchor=\"end\">"
      << tick_label(t, p.y.step) << "</text>\n";
  o << "</g>\n"
    << "<text x=\"" << fmt((x0 + x1) / 2) << "\" y=\"" << fmt(p.h - 12.0)
    << "\" text-anchor=\"middle\">step</text>\n"
    << "<text x=\"16\" y=\"" << fmt((y0 + y1) / 2) << "\" text-anchor=\"middle\" transform=\"rotate(-90 16 "
    << fmt((y0 + y1) / 2) << ")\">loss</text>\n";
  o << "<polyline class=\"raw\" fill=\"none\" stroke=\"" << kRawColor << "\" stroke-width=\"1\" points=\""
    << points_attr(p.raw) << "\"/>\n"
    << "<polyline class=\"smoothed\" fill=\"none\" stroke=\"" << kSmoothColor
    << "\" stroke-width=\"2\" points=\"" << points_attr(p.smooth) << "\"/>\n";
  // legend
  o << "<g class=\"legend\">\n"
    << "<line x1=\"" << fmt(x1 - 150) << "\" y1=\"" << fmt(y1 + 12) << "\" x2=\"" << fmt(x1 - 130)
    << "\" y2=\"" << fmt(y1 + 12) << "\" stroke=\"" << kRawColor << "\" stroke-width=\"2\"/>\n"
    << "<text x=\"" << fmt(x1 - 125) << "\" y=\"" << fmt(y1 + 16) << "\">loss</text>\n"
    << "<line x1=\"" << fmt(x1 - 150) << "\" y1=\"" << fmt(y1 + 28) << "\" x2=\"" << fmt(x1 - 130)
    << "\" y2=\"" << fmt(y1 + 28) << "\" stroke=\"" << kSmoothColor << "\" stroke-width=\"2\"/>\n"
    << "<text x=\"" << fmt(x1 - 125) << "\" y=\"" << fmt(y1 + 32) << "\">smoothed</text>\n"
    << "</g>\n</svg>\n";
  return o.str();
}

void write_loss_plot_svg(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title,
                         const PlotOptions& opt) {
  io::write_file_atomic(path, loss_plot_svg(steps, losses, title, opt));
}

// ---- PNG: a small RGB rasterizer ----

namespace {

struct Rgb {
  uint8_t r, g, b;
};

Rgb parse_color(const char* hex) {
  auto h = [](char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; };
  return Rgb{uint8_t(h(hex[1]) * 16 + h(hex[2])), uint8_t(h(hex[3]) * 16 + h(hex[4])),
             uint8_t(h(hex[5]) * 16 + h(hex[6]))};
}

class Canvas {
 public:
  Canvas(int w, int h) : img_(vision::Image::zeros(w, h, 3)) {
    std::fill(img_.pixels.begin(), img_.pixels.end(), uint8_t(255));
  }
  vision::Image& image() { return img_; }

  // Blends colour c at coverage a (0..1) into pixel (x, y).
  void blend(int x, int y, Rgb c, double a) {
    if (x < 0 || y < 0 || x >= img_.width || y >= img_.height || !(a > 0)) return;
    a = std::min(a, 1.0);
    uint8_t* p = img_.row(y) + size_t(x) * 3;
    const uint8_t src[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(p[k] * (1 - a) + src[k] * a));
  }

  // An antialiased line of the given width: every pixel within width/2 of the segment is covered, with a one
  // pixel soft edge (distance-to-segment coverage; plenty fast for a few thousand points).
  void line(double xa, double ya, double xb, double yb, double width, Rgb c) {
    double r = width / 2;
    int x_lo = int(std::floor(std::min(xa, xb) - r - 1)), x_hi = int(std::ceil(std::max(xa, xb) + r + 1));
    int y_lo = int(std::floor(std::min(ya, yb) - r - 1)), y_hi = int(std::ceil(std::max(ya, yb) + r + 1));
    double dx = xb - xa, dy = yb - ya, len2 = dx * dx + dy * dy;
    for (int y = std::max(y_lo, 0); y <= std::min(y_hi, img_.height - 1); ++y)
      for (int x = std::max(x_lo, 0); x <= std::min(x_hi, img_.width - 1); ++x) {
        double qx = x + 0.5 - xa, qy = y + 0.5 - ya;
        double t = len2 > 0 ? std::clamp((qx * dx + qy * dy) / len2, 0.0, 1.0) : 0.0;
        double ex = qx - t * dx, ey = qy - t * dy;
        double d = std::sqrt(ex * ex + ey * ey);
        double cover = std::clamp(r + 0.5 - d, 0.0, 1.0);
        if (cover > 0) max_blend(x, y, c, cover);
      }
  }

  void polyline(const std::vector<std::pair<double, double>>& pts, double width, Rgb c) {
    coverage_.assign(size_t(img_.width) * size_t(img_.height), 0.0f);
    base_ = img_.pixels;
    for (size_t i = 0; i + 1 < pts.size(); ++i)
      line(pts[i].first, pts[i].second, pts[i + 1].first, pts[i + 1].second, width, c);
    if (pts.size() == 1) line(pts[0].first, pts[0].second, pts[0].first, pts[0].second, width + 1, c);
    coverage_.clear();
  }

  // Text in the 5x7 font at integer scale; (x, y) is the top-left corner.
  void text(int x, int y, const std::string& s, int scale, Rgb c) {
    for (char ch : s) {
      const uint8_t* g = plot_font_glyph(ch);
      for (int row = 0; row < 7; ++row)
        for (int col = 0; col < 5; ++col)
          if (g[row] & (0x10 >> col))
            for (int sy = 0; sy < scale; ++sy)
              for (int sx = 0; sx < scale; ++sx) blend(x + col * scale + sx, y + row * scale + sy, c, 1.0);
      x += 6 * scale;
    }
  }
  static int text_width(const std::string& s, int scale) { return int(s.size()) * 6 * scale - scale; }

  void fill_rect(int x0, int y0, int x1, int y1, Rgb c) {
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) blend(x, y, c, 1.0);
  }

 private:
  // Within one polyline, overlapping segments take the maximum coverage instead of blending twice (no dark
  // beads at the joints).
  void max_blend(int x, int y, Rgb c, double cover) {
    if (coverage_.empty()) return blend(x, y, c, cover);
    float& cv = coverage_[size_t(y) * size_t(img_.width) + size_t(x)];
    if (cover <= cv) return;
    cv = float(cover);
    uint8_t* p = img_.row(y) + size_t(x) * 3;
    const uint8_t* b = base_.data() + (size_t(y) * size_t(img_.width) + size_t(x)) * 3;
    const uint8_t src[3] = {c.r, c.g, c.b};
    for (int k = 0; k < 3; ++k) p[k] = uint8_t(std::lround(b[k] * (1 - cover) + src[k] * cover));
  }

  vision::Image img_;
  std::vector<float> coverage_;
  std::vector<uint8_t> base_;
};

}  // namespace

void write_loss_plot_png(const std::string& path, const std::vector<int64_t>& steps,
                         const std::vector<double>& losses, const std::string& title,
                         const PlotOptions& opt) {
  Plot p = layout(steps, losses, opt);
  Canvas cv(p.w, p.h);
  const Rgb black{0, 0, 0}, grid{229, 229, 229};
  const int x0 = int(std::lround(p.left)), x1 = int(std::lround(p.w - p.right));
  const int y0 = int(std::lround(p.h - p.bottom)), y1 = int(std::lround(p.top));
  for (double t : p.x.ticks)
    cv.fill_rect(int(std::lround(p.px(t))), y1, int(std::lround(p.px(t))) + 1, y0, grid);
  for (double t : p.y.ticks)
    cv.fill_rect(x0, int(std::lround(p.py(t))), x1, int(std::lround(p.py(t))) + 1, grid);
  cv.fill_rect(x0, y0, x1 + 1, y0 + 1, black);
  cv.fill_rect(x0, y1, x0 + 1, y0 + 1, black);
  for (double t : p.x.ticks) {
    int x = int(std::lround(p.px(t)));
    cv.fill_rect(x, y0, x + 1, y0 + 5, black);
    std::string l = tick_label(t, p.x.step);
    cv.text(x - Canvas::text_width(l, 1) / 2, y0 + 9, l, 1, black);
  }
  for (double t : p.y.ticks) {
    int y = int(std::lround(p.py(t)));
    cv.fill_rect(x0 - 5, y, x0, y + 1, black);
    std::string l = tick_label(t, p.y.step);
    cv.text(x0 - 8 - Canvas::text_width(l, 1), y - 3, l, 1, black);
  }
  cv.text((x0 + x1) / 2 - Canvas::text_width("step", 1) / 2, p.h - 20, "step", 1, black);
  cv.text(6, (y0 + y1) / 2 - 3, "loss", 1, black);
  cv.text((x0 + x1) / 2 - Canvas::text_width(title, 2) / 2, 12, title, 2, black);
  cv.polyline(p.raw, 1.0, parse_color(kRawColor));
  cv.polyline(p.smooth, 2.0, parse_color(kSmoothColor));
  // legend
  cv.fill_rect(x1 - 150, y1 + 11, x1 - 130, y1 + 13, parse_color(kRawColor));
  cv.text(x1 - 125, y1 + 9, "loss", 1, black);
  cv.fill_rect(x1 - 150, y1 + 27, x1 - 130, y1 + 29, parse_color(kSmoothColor));
  cv.text(x1 - 125, y1 + 25, "smoothed", 1, black);
  io::write_file_atomic(path, vision::encode_png(cv.image()));
}

}  // namespace iris::train
