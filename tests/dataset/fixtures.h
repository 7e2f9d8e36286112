// Test data for the data pipeline: the shared real tokenizers, chat templates, and a generator of small PNG
// images and LLaVA / caption files (good and broken entries) in a temp folder.
#pragma once
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "vision/image.h"

namespace iris::data::testing {

// The real tokenizers of ../shared/tokenizers ("mistral", "llama3", "qwen2"), loaded once.
inline const text::Tokenizer& shared_tokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<text::Tokenizer>> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    const std::string dir = iris::test::shared_dir() + "/tokenizers/" + name;
    auto tok = std::make_unique<text::Tokenizer>(
        text::Tokenizer::from_files(dir + "/tokenizer.json", dir + "/tokenizer_config.json"));
    it = cache.emplace(name, std::move(tok)).first;
  }
  return *it->second;
}

// A w x h RGB image with a pattern that depends on `seed`.
inline vision::Image pattern_image(int w, int h, int seed) {
  vision::Image img = vision::Image::zeros(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + 3 * x;
      p[0] = uint8_t((x * 7 + seed * 31) & 255);
      p[1] = uint8_t((y * 5 + seed * 17) & 255);
      p[2] = uint8_t(((x + y) * 3 + seed * 11) & 255);
    }
  return img;
}

// Writes a folder with images/ (img0.png .. img{n-1}.png of varied sizes, broken.png that is not an image,
// truncated.png cut short) and returns its path.
inline std::string make_image_folder(const std::string& name, int n) {
  const std::string dir = iris::test::temp_dir() + "/" + name;
  std::filesystem::create_directories(dir + "/images");
  for (int i = 0; i < n; ++i)
    vision::save_png(dir + "/images/img" + std::to_string(i) + ".png", pattern_image(20 + 3 * i, 16 + 2 * i, i));
  iris::test::write_file(dir + "/images/broken.png", "this is not an image");
  std::string png = vision::encode_png(pattern_image(32, 32, 99));
  iris::test::write_file(dir + "/images/truncated.png", png.substr(0, png.size() / 2));
  return dir;
}

}  // namespace iris::data::testing
