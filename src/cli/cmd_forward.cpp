// iris forward: one full forward pass for parity work against a reference implementation. Inputs: an image file or
// pixel values (.npy), a prompt or input ids (.npy). Outputs float32/int64 .npy files shaped as Hugging Face
// shapes them (batch first).
#include <cstdio>
#include <filesystem>

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

// Rows of several (n_i, D) tensors: stacked (k, n, D) when every image gives the same count and the family
// batches images (LLaVA), else concatenated (sum n_i, D) as Qwen2-VL's vision tower returns them.
Tensor join_rows(const std::vector<Tensor>& parts, bool stack) {
  int64_t rows = 0, D = parts.empty() ? 0 : parts[0].dim(1);
  for (const Tensor& t : parts) rows += t.dim(0);
  Tensor out = Tensor::empty({rows, D});
  int64_t r = 0;
  for (const Tensor& t : parts) {
    Tensor c = t.contiguous();
    std::copy_n(c.data<float>(), c.numel(), out.data<float>() + r * D);
    r += c.dim(0);
  }
  if (stack && !parts.empty()) return out.view({int64_t(parts.size()), parts[0].dim(0), D});
  return out;
}

}  // namespace

Runner add_forward(CLI::App& app) {
  struct Opts {
    ModelFlags model;
    std::vector<std::string> images;
    std::string pixel_values, image_grid_thw, pixel_attention_mask, prompt, input_ids;
    std::string save_logits, save_pixel_values, save_vision_hidden, save_image_features, save_generated_ids;
    std::string save_processor_outputs, save_position_ids;
    int generate = 0;
  };
  auto o = std::make_shared<Opts>();
  o->model.add(app);
  app.add_option("--image", o->images, "image file; repeat for several images (in the prompt's order)");
  app.add_option("--pixel-values", o->pixel_values,
                 "pixel values .npy in the shape the Hugging Face model takes: LLaVA (n, 3, H, W), Qwen2-VL "
                 "(patches, 1176) float32");
  app.add_option("--image-grid-thw", o->image_grid_thw, "Qwen2-VL: image_grid_thw .npy (n, 3) int64 for --pixel-values");
  app.add_option("--pixel-attention-mask", o->pixel_attention_mask,
                 "Idefics3 / SmolVLM: pixel_attention_mask .npy (1, frames, H, W) for --pixel-values (default: all "
                 "pixels real)");
  app.add_option("-p,--prompt", o->prompt, "prompt text (rendered with the chat template)");
  app.add_option("--input-ids", o->input_ids, "input ids .npy, (1, S) int64, image tokens already expanded");
  app.add_option("--save-logits", o->save_logits, "write logits at every prompt position, (1, S, V) float32");
  app.add_option("--save-pixel-values", o->save_pixel_values, "write the pixel values as the model takes them");
  app.add_option("--save-processor-outputs", o->save_processor_outputs,
                 "write the processor's outputs into this folder under Hugging Face's names: pixel_values.npy, "
                 "image_grid_thw.npy (Qwen2-VL), input_ids.npy (the expanded prompt)");
  app.add_option("--save-vision-hidden", o->save_vision_hidden,
                 "write the vision tower's last hidden state before selection / merging: LLaVA (n, tokens, Dv) "
                 "class token first, Qwen2-VL (patches, Dv)");
  app.add_option("--save-image-features", o->save_image_features,
                 "write the rows spliced at the image tokens: LLaVA (n, tokens, D), Qwen2-VL (tokens, D)");
  app.add_option("--save-position-ids", o->save_position_ids,
                 "write the rotary positions of the prompt, (streams, 1, S) int64 (3 streams for M-RoPE)");
  app.add_option("--generate", o->generate, "continue greedily for N tokens with the KV cache (EOS ignored)");
  app.add_option("--save-generated-ids", o->save_generated_ids, "write the generated ids, (1, N) int64");
  return [o] {
    o->model.apply_threads();
    o->model.resolve();
    IRIS_CHECK(o->images.empty() || o->pixel_values.empty(), "give --image or --pixel-values, not both");
    IRIS_CHECK(o->image_grid_thw.empty() || !o->pixel_values.empty(), "--image-grid-thw goes with --pixel-values");
    IRIS_CHECK(o->pixel_attention_mask.empty() || !o->pixel_values.empty(),
               "--pixel-attention-mask goes with --pixel-values");
    IRIS_CHECK(o->pixel_attention_mask.empty() || o->image_grid_thw.empty(),
               "--image-grid-thw (Qwen2-VL) and --pixel-attention-mask (Idefics3) do not go together");
    IRIS_CHECK(o->prompt.empty() != o->input_ids.empty(), "give exactly one of -p/--prompt and --input-ids");
    auto engine = runtime::Engine::load(o->model.model, o->model.engine_options());
    const models::Vlm& m = engine->model();
    // Pixels, one entry per image.
    std::vector<models::ImagePixels> pixels;
    if (!o->images.empty()) {
      for (const std::string& path : o->images)
        pixels.push_back(engine->process_image(vision::load_image(path, o->model.engine_options().decode)));
    } else if (!o->pixel_values.empty()) {
      Tensor pv = io::load_npy(o->pixel_values);
      // The processor's second array: Qwen2-VL's image_grid_thw or Idefics3's pixel_attention_mask.
      Tensor grid = !o->image_grid_thw.empty()         ? io::load_npy(o->image_grid_thw)
                    : !o->pixel_attention_mask.empty() ? io::load_npy(o->pixel_attention_mask)
                                                       : Tensor();
      try {
        pixels = m.processor().split_pixel_values(pv, grid);
      } catch (const Error& e) {
        throw Error(str_cat(o->pixel_values, ": ", e.what()));
      }
    }
    const bool stacked = !pixels.empty() && m.processor().batch_pixel_values(pixels).ndim() == 4;
    if (!o->save_pixel_values.empty()) {
      IRIS_CHECK(!pixels.empty(), "--save-pixel-values needs --image or --pixel-values");
      io::save_npy(o->save_pixel_values, m.processor().batch_pixel_values(pixels));
    }
    std::vector<models::ImageFeatures> images;
    std::vector<Tensor> hidden, feats;
    for (const models::ImagePixels& px : pixels) {
      Tensor h;
      nn::Tap tap = [&h](std::string_view name, int il, const float* data, int64_t rows, int64_t cols) {
        if (name != "vision_hidden" || il != -1) return;
        h = Tensor::empty({rows, cols});
        std::copy_n(data, rows * cols, h.data<float>());
      };
      models::ImageFeatures f = m.encode_image(px, tap);
      hidden.push_back(h);
      feats.push_back(f.embeddings);
      images.push_back(std::move(f));
    }
    if (!o->save_vision_hidden.empty()) {
      IRIS_CHECK(!pixels.empty(), "--save-vision-hidden needs --image or --pixel-values");
      io::save_npy(o->save_vision_hidden, join_rows(hidden, stacked));
    }
    if (!o->save_image_features.empty()) {
      IRIS_CHECK(!pixels.empty(), "--save-image-features needs --image or --pixel-values");
      io::save_npy(o->save_image_features, join_rows(feats, stacked));
    }
    // Ids.
    std::vector<int32_t> ids;
    if (!o->input_ids.empty()) {
      ids = ids_from_npy(o->input_ids);
    } else {
      ids = engine->tokenize_prompt(engine->render_prompt({{"user", o->prompt, int(pixels.size())}}), pixels);
    }
    const int64_t S = int64_t(ids.size()), V = m.text().vocab_size();
    if (!o->save_processor_outputs.empty()) {
      const std::string d = o->save_processor_outputs;
      std::filesystem::create_directories(d);
      std::vector<int64_t> ids64(ids.begin(), ids.end());
      io::save_npy(d + "/input_ids.npy", Tensor::from_vector(ids64, {1, S}));
      if (!pixels.empty()) {
        io::save_npy(d + "/pixel_values.npy", m.processor().batch_pixel_values(pixels));
        for (const auto& [name, t] : m.processor().extra_outputs(pixels)) io::save_npy(d + "/" + name + ".npy", t);
      }
    }
    IRIS_CHECK(S + o->generate <= engine->n_ctx(), "the prompt (", S, " tokens) and ", o->generate,
               " generated tokens do not fit the context of ", engine->n_ctx(), " (raise it with -c)");
    const models::PromptInput in = m.prepare_prompt(ids, images);
    if (!o->save_position_ids.empty())
      io::save_npy(o->save_position_ids, Tensor::from_vector(in.positions.ids, {in.positions.n_streams, 1, S}));
    runtime::Session session(m, engine->n_ctx());
    std::vector<float> logits = session.prefill(in, /*all_logits=*/true);
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
