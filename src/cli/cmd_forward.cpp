// iris forward: one full forward pass for parity work against a reference implementation. Inputs: an image file or
// pixel values (.npy), a prompt or input ids (.npy). Outputs float32/int64 .npy files shaped as Hugging Face
// shapes them (batch first).
#include <cstdio>

#include "cli/common.h"
#include "io/npy.h"

namespace iris::cli {

namespace {

std::vector<int32_t> ids_from_npy(const std::string& path) {
  Tensor t = io::load_npy(path);
  IRIS_CHECK(t.ndim() == 1 || (t.ndim() == 2 && t.dim(0) == 1), path, ": input ids must have shape (S,) or (1, S), got ",
             shape_str(t.shape()));
  IRIS_CHECK(t.dtype() == DType::I64 || t.dtype() == DType::I32, path, ": input ids must be int64 or int32, got ",
             dtype_name(t.dtype()));
  Tensor i64 = t.to(DType::I64);
  std::vector<int32_t> ids(static_cast<size_t>(i64.numel()));
  for (size_t i = 0; i < ids.size(); ++i) {
    int64_t v = i64.data<int64_t>()[i];
    IRIS_CHECK(v >= 0 && v <= INT32_MAX, path, ": token id ", v, " at position ", i, " is out of range");
    ids[i] = int32_t(v);
  }
  return ids;
}

Tensor batch1(const Tensor& t) { return t.unsqueeze(0).contiguous(); }

}  // namespace

Runner add_forward(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::string image, pixel_values, prompt, input_ids;
    std::string save_logits, save_pixel_values, save_vision_hidden, save_image_features, save_generated_ids;
    int generate = 0;
  };
  auto o = std::make_shared<Opts>();
  o->model.add(app);
  app.add_option("--image", o->image, "image file");
  app.add_option("--pixel-values", o->pixel_values, "normalised pixel values .npy, (1, 3, H, W) float32");
  app.add_option("-p,--prompt", o->prompt, "prompt text (rendered with the chat template)");
  app.add_option("--input-ids", o->input_ids, "input ids .npy, (1, S) int64, image tokens already expanded");
  app.add_option("--save-logits", o->save_logits, "write logits at every prompt position, (1, S, V) float32");
  app.add_option("--save-pixel-values", o->save_pixel_values, "write the pixel values, (1, 3, H, W)");
  app.add_option("--save-vision-hidden", o->save_vision_hidden, "write the selected vision layer, (1, tokens, Dv)");
  app.add_option("--save-image-features", o->save_image_features, "write the projector output, (1, n, D)");
  app.add_option("--generate", o->generate, "continue greedily for N tokens with the KV cache (EOS ignored)");
  app.add_option("--save-generated-ids", o->save_generated_ids, "write the generated ids, (1, N) int64");
  return [o] {
    o->model.apply_threads();
    o->model.resolve();
    IRIS_CHECK(o->image.empty() || o->pixel_values.empty(), "give --image or --pixel-values, not both");
    IRIS_CHECK(o->prompt.empty() != o->input_ids.empty(), "give exactly one of -p/--prompt and --input-ids");
    auto engine = runtime::Engine::load(o->model.model, o->model.engine_options());
    const models::Vlm& m = engine->model();
    // Pixels.
    Tensor px;
    if (!o->image.empty()) {
      vision::Image img = vision::load_image(o->image, o->model.engine_options().decode);
      std::vector<float> v = engine->pixel_values(img);
      px = Tensor::from_vector(v, {1, 3, engine->preprocess_config().out_height(), engine->preprocess_config().out_width()});
    } else if (!o->pixel_values.empty()) {
      px = io::load_npy(o->pixel_values);
      IRIS_CHECK(px.ndim() == 4 && px.dim(0) == 1 && px.dtype() == DType::F32, o->pixel_values,
                 ": pixel values must be float32 (1, C, H, W), got ", dtype_name(px.dtype()), " ", shape_str(px.shape()));
    }
    if (!o->save_pixel_values.empty()) {
      IRIS_CHECK(px.defined(), "--save-pixel-values needs --image or --pixel-values");
      io::save_npy(o->save_pixel_values, px);
    }
    std::vector<Tensor> images;
    if (px.defined()) {
      models::ImageEncoding enc = m.encode_image(px.data<float>(), px.dim(1), px.dim(2), px.dim(3));
      if (!o->save_vision_hidden.empty()) io::save_npy(o->save_vision_hidden, batch1(enc.selected_layer));
      if (!o->save_image_features.empty()) io::save_npy(o->save_image_features, batch1(enc.embeddings));
      images.push_back(enc.embeddings);
    }
    // Ids.
    std::vector<int32_t> ids;
    if (!o->input_ids.empty()) {
      ids = ids_from_npy(o->input_ids);
    } else {
      ids = engine->tokenize_prompt(engine->render_prompt({{"user", o->prompt, px.defined() ? 1 : 0}}));
    }
    const int64_t S = int64_t(ids.size()), V = m.text().vocab_size();
    IRIS_CHECK(S + o->generate <= engine->n_ctx(), "the prompt (", S, " tokens) and ", o->generate,
               " generated tokens do not fit the context of ", engine->n_ctx(), " (raise it with -c)");
    Tensor emb = m.embed_prompt(ids, images);
    runtime::Session session(m, engine->n_ctx());
    std::vector<float> logits = session.prefill(emb, /*all_logits=*/true);
    if (!o->save_logits.empty()) io::save_npy(o->save_logits, Tensor::from_vector(logits, {1, S, V}));
    if (o->generate > 0) {
      std::vector<int64_t> gen;
      const float* last = logits.data() + (S - 1) * V;
      std::vector<float> cur(last, last + V);
      for (int i = 0; i < o->generate; ++i) {
        int32_t tok = int32_t(std::max_element(cur.begin(), cur.end()) - cur.begin());
        gen.push_back(tok);
        if (i + 1 < o->generate) cur = session.decode(tok);
      }
      if (!o->save_generated_ids.empty())
        io::save_npy(o->save_generated_ids, Tensor::from_vector(gen, {1, int64_t(gen.size())}));
      else
        std::printf("%s\n", nlohmann::json(gen).dump().c_str());
    }
    return 0;
  };
}

}  // namespace iris::cli
