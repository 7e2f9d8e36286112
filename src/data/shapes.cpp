// The shapes world: vocabulary, scene sampling (rejection-sampled, non-touching placement) and the rasteriser
// (4x4 supersampled coverage per pixel, bitmap-font labels, luminance noise).
#include "data/shapes.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <numbers>

#include "data/font.h"
#include "data/rng.h"
#include "tensor/error.h"

namespace iris::data {

namespace {

constexpr const char* kShapeNames[kNumShapes] = {"circle",   "square", "rectangle",
                                                 "triangle", "star",   "diamond"};
constexpr const char* kShapePlurals[kNumShapes] = {"circles",   "squares", "rectangles",
                                                   "triangles", "stars",   "diamonds"};

struct ColourDef {
  const char* name;
  Rgb rgb;
};
// Saturated, mutually distant colours (pairwise RGB distance >= 100), far from every background tone.
constexpr ColourDef kColours[kNumColours] = {
    {"red", {220, 30, 30}},     {"green", {30, 160, 50}},  {"blue", {30, 70, 220}},
    {"yellow", {250, 225, 20}}, {"orange", {245, 125, 0}}, {"purple", {130, 40, 180}},
    {"white", {250, 250, 250}}, {"black", {20, 20, 20}},
};

constexpr const char* kSizeNames[kNumSizes] = {"small", "medium", "large"};
// Largest extent of an object as a fraction of the image side, per size class.
constexpr double kSizeLo[kNumSizes] = {0.12, 0.20, 0.29};
constexpr double kSizeHi[kNumSizes] = {0.16, 0.25, 0.35};

// Object dimensions (W, H) for a shape whose largest extent is s pixels.
std::pair<int, int> shape_dims(int shape, int s, Rng& rng) {
  switch (shape) {
    case kRectangle: {
      int short_side = std::max(4, int(std::lround(s * rng.uniform(0.45, 0.6))));
      return rng.below(2) ? std::pair{s, short_side} : std::pair{short_side, s};
    }
    case kTriangle:
      return {s, std::max(4, int(std::lround(s * 0.87)))};
    case kStar:
      return {std::max(4, int(std::lround(s * 1.902 / 1.809))), s};  // 2 R sin72 wide, R (1 + cos36) tall
    case kDiamond:
      return {std::max(4, int(std::lround(s * 0.72))), s};
    default:
      return {s, s};
  }
}

// Polygon vertices of the non-round shapes in pixel coordinates.
std::vector<std::array<double, 2>> polygon(const SceneObject& o) {
  const double X0 = o.x0, Y0 = o.y0, W = o.x1 - o.x0, H = o.y1 - o.y0;
  switch (o.shape) {
    case kTriangle:
      return {{X0 + W / 2, Y0}, {X0 + W, Y0 + H}, {X0, Y0 + H}};
    case kDiamond:
      return {{X0 + W / 2, Y0}, {X0 + W, Y0 + H / 2}, {X0 + W / 2, Y0 + H}, {X0, Y0 + H / 2}};
    case kStar: {
      const double R = H / 1.809, r = 0.5 * R, cx = X0 + W / 2, cy = Y0 + R;
      std::vector<std::array<double, 2>> v;
      for (int k = 0; k < 10; ++k) {
        const double a = std::numbers::pi * k / 5.0, rad = k % 2 ? r : R;
        v.push_back({cx + rad * std::sin(a), cy - rad * std::cos(a)});
      }
      return v;
    }
    default:
      return {};
  }
}

bool in_polygon(const std::vector<std::array<double, 2>>& v, double x, double y) {
  bool in = false;  // even-odd crossing test
  for (size_t i = 0, j = v.size() - 1; i < v.size(); j = i++) {
    const double xi = v[i][0], yi = v[i][1], xj = v[j][0], yj = v[j][1];
    if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
  }
  return in;
}

bool contains(const SceneObject& o, const std::vector<std::array<double, 2>>& poly, double x, double y) {
  switch (o.shape) {
    case kCircle: {
      const double r = 0.5 * (o.x1 - o.x0), dx = x - o.center_x(), dy = y - o.center_y();
      return dx * dx + dy * dy <= r * r;
    }
    case kSquare:
    case kRectangle:
      return x >= o.x0 && x <= o.x1 && y >= o.y0 && y <= o.y1;
    default:
      return in_polygon(poly, x, y);
  }
}

// A point well inside the shape: the centroid for triangles, the star's centre, else the box centre.
std::pair<double, double> inside_point(const SceneObject& o) {
  const double W = o.x1 - o.x0, H = o.y1 - o.y0;
  if (o.shape == kTriangle) return {o.x0 + W / 2, o.y0 + H * 2.0 / 3.0};
  if (o.shape == kStar) return {o.x0 + W / 2, o.y0 + H / 1.809};
  return {o.center_x(), o.center_y()};
}

// The largest label scale (at most 3) whose text fits the shape's interior, or 0.
int label_scale(const SceneObject& o, const std::string& text) {
  const double W = o.x1 - o.x0, H = o.y1 - o.y0;
  double iw = 0, ih = 0;
  if (o.shape == kCircle)
    iw = ih = 0.68 * W;
  else if (o.shape == kSquare)
    iw = 0.8 * W, ih = 0.8 * H;
  else if (o.shape == kRectangle)
    iw = 0.85 * W, ih = 0.75 * H;
  for (int s = 3; s >= 1; --s)
    if (text_width(text, s) <= iw && text_height(s) <= ih) return s;
  return 0;
}

Rgb label_colour(int colour) {
  const Rgb c = kColours[colour].rgb;
  const double lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
  return lum > 140 ? Rgb{20, 20, 20} : Rgb{250, 250, 250};
}

}  // namespace

const char* shape_name(int shape) {
  return kShapeNames[shape];
}
const char* shape_plural(int shape) {
  return kShapePlurals[shape];
}
const char* colour_name(int colour) {
  return kColours[colour].name;
}
Rgb colour_rgb(int colour) {
  return kColours[colour].rgb;
}
const char* size_name(int size) {
  return kSizeNames[size];
}

const std::vector<Rgb>& background_palette() {
  static const std::vector<Rgb> p = {{172, 172, 172}, {208, 194, 166}, {152, 166, 182}, {166, 186, 160},
                                     {204, 184, 146}, {184, 170, 190}, {150, 184, 184}, {188, 178, 166}};
  return p;
}

const std::vector<std::string>& label_words() {
  static const std::vector<std::string> w = {
      "CAT", "DOG",  "SUN",  "MAP",  "BOX",  "CUP",  "HAT",  "KEY",  "PEN",  "BUS",  "CAR",  "FOX",  "OWL",
      "BEE", "EGG",  "ICE",  "JAM",  "LOG",  "MUG",  "NET",  "PIG",  "RUG",  "SKY",  "TOY",  "VAN",  "WEB",
      "ZIP", "FISH", "BIRD", "TREE", "LAMP", "BOOK", "DOOR", "KITE", "ROSE", "SHIP", "MILK", "FROG", "CAKE"};
  return w;
}

void validate(const ShapesOptions& opt) {
  IRIS_CHECK(opt.n >= 1 && opt.n <= 10'000'000, "shapes: --n ", opt.n,
             " is out of range (expected 1 to 10000000)");
  IRIS_CHECK(opt.min_size >= 32 && opt.min_size <= 2048, "shapes: --min-size ", opt.min_size,
             " is out of range (expected 32 to 2048 pixels)");
  IRIS_CHECK(opt.max_size >= 32 && opt.max_size <= 2048, "shapes: --max-size ", opt.max_size,
             " is out of range (expected 32 to 2048 pixels)");
  IRIS_CHECK(opt.min_size <= opt.max_size, "shapes: --min-size ", opt.min_size, " is larger than --max-size ",
             opt.max_size);
  IRIS_CHECK(opt.max_turns >= 1 && opt.max_turns <= 64, "shapes: --max-turns ", opt.max_turns,
             " is out of range (expected 1 to 64)");
  IRIS_CHECK(!opt.split.empty() && opt.split.size() <= 64,
             "shapes: --split must be a name of 1 to 64 characters");
  for (char c : opt.split)
    IRIS_CHECK(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-', "shapes: --split \"",
               opt.split, "\" may only hold letters, digits, '_' and '-'");
}

uint64_t shapes_key(const ShapesOptions& opt, int64_t index, uint64_t stream) {
  uint64_t split = 0xcbf29ce484222325ULL;  // FNV-1a of the split name, stable across platforms
  for (unsigned char c : opt.split) split = (split ^ c) * 0x100000001b3ULL;
  return hash_key({opt.seed, split, uint64_t(index), stream});
}

bool shape_contains(const SceneObject& o, double x, double y) {
  return contains(o, polygon(o), x, y);
}

Scene make_scene(const ShapesOptions& opt, int64_t index) {
  Rng rng(shapes_key(opt, index, 1));
  Scene s;
  s.index = index;
  char name[32];
  std::snprintf(name, sizeof name, "images/%06lld.png", static_cast<long long>(index));
  s.image = name;
  s.size = opt.min_size + int(rng.below(uint64_t(opt.max_size - opt.min_size + 1)));
  const auto& pal = background_palette();
  s.bg_from = pal[rng.below(pal.size())];
  s.gradient = rng.below(5) >= 2;  // 60% gradients
  s.bg_to = s.gradient ? pal[rng.below(pal.size())] : s.bg_from;
  s.gradient_dir = int(rng.below(3));
  static constexpr int kNoise[4] = {0, 3, 6, 9};
  s.noise = kNoise[rng.below(4)];

  const int side = s.size;
  const int gap = std::max(2, int(std::lround(0.03 * side)));
  const int n_obj = 1 + int(rng.below(kMaxObjects));
  std::vector<std::string> used_labels;
  for (int k = 0; k < n_obj; ++k) {
    SceneObject o;
    o.shape = int(rng.below(kNumShapes));
    o.colour = int(rng.below(kNumColours));
    const int want_size = int(rng.below(kNumSizes));
    bool placed = false;
    for (int sz = want_size; sz >= 0 && !placed; --sz) {  // shrink when a crowded image has no room
      const int ext = std::max(8, int(std::lround(side * rng.uniform(kSizeLo[sz], kSizeHi[sz]))));
      auto [W, H] = shape_dims(o.shape, ext, rng);
      if (W + 2 > side || H + 2 > side) continue;
      for (int attempt = 0; attempt < 60 && !placed; ++attempt) {
        const int x0 = 1 + int(rng.below(uint64_t(side - W - 1))),
                  y0 = 1 + int(rng.below(uint64_t(side - H - 1)));
        bool ok = true;
        for (const SceneObject& p : s.objects)
          if (x0 < p.x1 + gap && p.x0 < x0 + W + gap && y0 < p.y1 + gap && p.y0 < y0 + H + gap) ok = false;
        if (!ok) continue;
        o.x0 = x0, o.y0 = y0, o.x1 = x0 + W, o.y1 = y0 + H, o.size = sz;
        placed = true;
      }
    }
    if (!placed) continue;
    auto [ix, iy] = inside_point(o);
    o.inside_x = int(std::floor(ix));
    o.inside_y = int(std::floor(iy));
    if (opt.text && (o.shape == kCircle || o.shape == kSquare || o.shape == kRectangle) && rng.below(2)) {
      std::string label;
      for (int tries = 0; tries < 8; ++tries) {  // labels are unique within an image
        label =
            rng.below(2) ? label_words()[rng.below(label_words().size())] : std::to_string(rng.below(100));
        if (std::find(used_labels.begin(), used_labels.end(), label) == used_labels.end()) break;
        label.clear();
      }
      const int scale = label.empty() ? 0 : label_scale(o, label);
      if (scale > 0) {
        o.text = label;
        o.text_scale = scale;
        used_labels.push_back(label);
      }
    }
    s.objects.push_back(std::move(o));
  }
  return s;
}

vision::Image render_scene(const Scene& s, const ShapesOptions& opt) {
  const int N = s.size;
  vision::Image img = vision::Image::zeros(N, N, 3);
  for (int y = 0; y < N; ++y) {
    uint8_t* row = img.row(y);
    for (int x = 0; x < N; ++x) {
      const double t = !s.gradient           ? 0.0
                       : s.gradient_dir == 0 ? (x + 0.5) / N
                       : s.gradient_dir == 1 ? (y + 0.5) / N
                                             : (x + y + 1.0) / (2.0 * N);
      for (int c = 0; c < 3; ++c)
        row[3 * x + c] =
            uint8_t(std::lround(s.bg_from[size_t(c)] + (s.bg_to[size_t(c)] - s.bg_from[size_t(c)]) * t));
    }
  }
  constexpr int kSub = 4;  // 4x4 samples per pixel
  for (const SceneObject& o : s.objects) {
    const auto poly = polygon(o);
    const Rgb col = kColours[o.colour].rgb;
    for (int y = std::max(0, o.y0 - 1); y < std::min(N, o.y1 + 1); ++y) {
      uint8_t* row = img.row(y);
      for (int x = std::max(0, o.x0 - 1); x < std::min(N, o.x1 + 1); ++x) {
        int hits = 0;
        for (int j = 0; j < kSub; ++j)
          for (int i = 0; i < kSub; ++i)
            hits += contains(o, poly, x + (i + 0.5) / kSub, y + (j + 0.5) / kSub);
        if (!hits) continue;
        const double a = double(hits) / (kSub * kSub);
        for (int c = 0; c < 3; ++c)
          row[3 * x + c] = uint8_t(std::lround(row[3 * x + c] * (1 - a) + col[size_t(c)] * a));
      }
    }
    if (!o.text.empty()) {
      const int tw = text_width(o.text, o.text_scale), th = text_height(o.text_scale);
      const int tx = o.x0 + (o.x1 - o.x0 - tw) / 2, ty = o.y0 + (o.y1 - o.y0 - th) / 2;
      draw_text(img, tx, ty, o.text, o.text_scale, label_colour(o.colour));
    }
  }
  if (s.noise > 0) {
    Rng rng(shapes_key(opt, s.index, 2));
    for (int y = 0; y < N; ++y) {
      uint8_t* row = img.row(y);
      for (int x = 0; x < N; ++x) {
        const int d = int(rng.below(uint64_t(2 * s.noise + 1))) - s.noise;  // same shift on R, G, B
        for (int c = 0; c < 3; ++c) row[3 * x + c] = uint8_t(std::clamp(row[3 * x + c] + d, 0, 255));
      }
    }
  }
  return img;
}

}  // namespace iris::data
