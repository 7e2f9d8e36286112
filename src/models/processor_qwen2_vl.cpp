// Qwen2-VL's image processor part.
#include "models/processor_qwen2_vl.h"

#include <filesystem>
#include <nlohmann/json.hpp>

namespace iris::models {

namespace fs = std::filesystem;

Qwen2VLProcessor::Qwen2VLProcessor(const Qwen2VLConfig& cfg, const std::string& dir) : cfg_(cfg) {
  const fs::path pp = dir.empty() ? fs::path() : fs::path(dir) / "preprocessor_config.json";
  if (!dir.empty() && fs::exists(pp)) pre_ = vision::Qwen2VLProcessorConfig::from_file(pp.string());
  const Qwen2VLVisionConfig& v = cfg.vision;
  IRIS_CHECK(pre_.patch_size == v.patch_size && pre_.merge_size == v.spatial_merge_size &&
                 pre_.temporal_patch_size == v.temporal_patch_size,
             dir, ": the image processor cuts ", pre_.patch_size, "px patches (merge ", pre_.merge_size, ", temporal ",
             pre_.temporal_patch_size, ") but the vision tower takes ", v.patch_size, "px (merge ",
             v.spatial_merge_size, ", temporal ", v.temporal_patch_size, ")");
}

ImagePixels Qwen2VLProcessor::process(const vision::Image& img, const ProcessOptions& opt) const {
  const vision::Qwen2VLProcessorConfig c = vision::with_pixel_bounds(pre_, opt.min_pixels, opt.max_pixels);
  vision::Qwen2VLImage q = vision::qwen2_vl_preprocess(img, c);
  ImagePixels r;
  const int64_t rows = q.grid_t * q.grid_h * q.grid_w;
  r.values = Tensor::from_vector(q.pixel_values, {rows, int64_t(q.pixel_values.size()) / std::max<int64_t>(rows, 1)});
  r.grid_t = q.grid_t;
  r.grid_h = q.grid_h;
  r.grid_w = q.grid_w;
  return r;
}

int64_t Qwen2VLProcessor::tokens_for(const ImagePixels& px) const {
  const int64_t m = cfg_.vision.spatial_merge_size;
  return px.grid_t * (px.grid_h / m) * (px.grid_w / m);
}

Tensor Qwen2VLProcessor::batch_pixel_values(const std::vector<ImagePixels>& images) const {
  const int64_t P = cfg_.vision.patch_dim();
  int64_t rows = 0;
  for (const ImagePixels& p : images) rows += p.values.dim(0);
  Tensor out = Tensor::empty({rows, P});
  int64_t r = 0;
  for (const ImagePixels& p : images) {
    Tensor v = p.values.contiguous();
    std::copy_n(v.data<float>(), v.numel(), out.data<float>() + r * P);
    r += v.dim(0);
  }
  return out;
}

std::vector<ImagePixels> Qwen2VLProcessor::split_pixel_values(const Tensor& pixel_values, const Tensor& grid_thw) const {
  const int64_t P = cfg_.vision.patch_dim(), m = cfg_.vision.spatial_merge_size;
  IRIS_CHECK(pixel_values.ndim() == 2 && pixel_values.dtype() == DType::F32 && pixel_values.dim(1) == P,
             "Qwen2-VL pixel values must be float32 (patches, ", P, "), got ", dtype_name(pixel_values.dtype()), " ",
             shape_str(pixel_values.shape()));
  IRIS_CHECK(grid_thw.defined(), "Qwen2-VL pixel values need their image_grid_thw (--image-grid-thw)");
  IRIS_CHECK(grid_thw.ndim() == 2 && grid_thw.dim(1) == 3, "image_grid_thw must have shape (n, 3), got ",
             shape_str(grid_thw.shape()));
  Tensor g = grid_thw.to(DType::I64);
  std::vector<ImagePixels> out;
  int64_t r = 0;
  for (int64_t i = 0; i < g.dim(0); ++i) {
    const int64_t* thw = g.data<int64_t>() + 3 * i;
    IRIS_CHECK(thw[0] >= 1 && thw[1] >= m && thw[2] >= m && thw[1] % m == 0 && thw[2] % m == 0,
               "image_grid_thw row ", i, " (", thw[0], ", ", thw[1], ", ", thw[2], ") is not whole ", m, "x", m,
               " merge blocks");
    const int64_t n = thw[0] * thw[1] * thw[2];
    IRIS_CHECK(r + n <= pixel_values.dim(0), "image_grid_thw asks for ", r + n, " patch rows but pixel_values has ",
               pixel_values.dim(0));
    ImagePixels p;
    p.values = pixel_values.slice(0, r, r + n).contiguous();
    p.grid_t = thw[0];
    p.grid_h = thw[1];
    p.grid_w = thw[2];
    out.push_back(std::move(p));
    r += n;
  }
  IRIS_CHECK(r == pixel_values.dim(0), "image_grid_thw accounts for ", r, " patch rows but pixel_values has ",
             pixel_values.dim(0));
  return out;
}

std::vector<std::pair<std::string, Tensor>> Qwen2VLProcessor::extra_outputs(
    const std::vector<ImagePixels>& images) const {
  Tensor g = Tensor::empty({int64_t(images.size()), 3}, DType::I64);
  for (size_t i = 0; i < images.size(); ++i) {
    g.data<int64_t>()[3 * i] = images[i].grid_t;
    g.data<int64_t>()[3 * i + 1] = images[i].grid_h;
    g.data<int64_t>()[3 * i + 2] = images[i].grid_w;
  }
  return {{"image_grid_thw", g}};
}

std::string Qwen2VLProcessor::default_chat_template() const {
  // Qwen2-VL's ChatML conversation (what its checkpoints' chat_template writes for images and text): a default
  // system turn, each image as <|vision_start|><|image_pad|><|vision_end|> where it stands among the parts.
  return "{% for message in messages %}"
         "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
         "{% endif %}"
         "<|im_start|>{{ message['role'] }}\n"
         "{% if message['content'] is string %}{{ message['content'] }}"
         "{% else %}{% for part in message['content'] %}"
         "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
         "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
         "{% endfor %}{% endif %}<|im_end|>\n"
         "{% endfor %}"
         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
}

std::vector<std::pair<std::string, std::string>> Qwen2VLProcessor::config_files() const {
  nlohmann::json p{{"image_processor_type", "Qwen2VLImageProcessor"},
                   {"processor_class", cfg_.vision.v25 ? "Qwen2_5_VLProcessor" : "Qwen2VLProcessor"},
                   {"do_convert_rgb", pre_.do_convert_rgb},
                   {"do_resize", pre_.do_resize},
                   {"resample", vision::resample_to_pil(pre_.resample)},
                   {"do_rescale", pre_.do_rescale},
                   {"rescale_factor", pre_.rescale_factor},
                   {"do_normalize", pre_.do_normalize},
                   {"image_mean", pre_.image_mean},
                   {"image_std", pre_.image_std},
                   {"min_pixels", pre_.min_pixels},
                   {"max_pixels", pre_.max_pixels},
                   {"patch_size", pre_.patch_size},
                   {"merge_size", pre_.merge_size},
                   {"temporal_patch_size", pre_.temporal_patch_size}};
  // The processor's chat template, as the checkpoints ship it beside the tokenizer's.
  nlohmann::json ct{{"chat_template", default_chat_template()}};
  return {{"preprocessor_config.json", p.dump(2) + "\n"}, {"chat_template.json", ct.dump(2) + "\n"}};
}

}  // namespace iris::models
