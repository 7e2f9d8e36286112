// Llama decoder: forward, training forward/backward, parameter slots.
#include "models/llama.h"

#include <numeric>

#include "ops/embedding.h"

namespace iris::models {

void Llama::load(WeightLoader& w, const std::string& body, const std::string& head, const LlamaConfig& cfg) {
  cfg_ = cfg;
  body_ = body;
  head_name_ = head;
  const int64_t D = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size;
  const int64_t qd = int64_t(cfg.num_attention_heads) * cfg.head_dim, kvd = int64_t(cfg.num_key_value_heads) * cfg.head_dim;
  embed_ = w.raw(body + "embed_tokens.weight", {V, D});
  tied_ = cfg.tie_word_embeddings && !w.has(head);
  w.record([this](std::vector<nn::ParamSlot>& out) {
    nn::ParamSlot e = nn::tensor_slot(body_ + "embed_tokens.weight", embed_, grad_embed_, true);
    if (tied_) {  // one tensor, two uses: the head computes with the same master and sums into the same gradient
      nn::Linear* hl = &head_;
      auto bind_table = e.bind;
      e.bind = [bind_table, hl](const Tensor& master, float* grad, cpu::MatmulPrecision precision) {
        bind_table(master, grad, precision);
        hl->w = cpu::LinearWeight(master, precision);
        hl->grad_w = grad;
      };
      e.refresh = [hl] {
        if (hl->w.precision() == cpu::MatmulPrecision::BF16) hl->w.repack();
      };
    }
    out.push_back(std::move(e));
  });
  layers_.clear();
  layers_.resize(size_t(cfg.num_hidden_layers));  // before loading: the record points into the layers
  for (int il = 0; il < cfg.num_hidden_layers; ++il) {
    const std::string l = body + "layers." + std::to_string(il) + ".";
    nn::DecoderBlock& b = layers_[size_t(il)];
    w.rmsnorm(b.attn_norm, l + "input_layernorm", D, cfg.rms_norm_eps);
    w.rmsnorm(b.mlp_norm, l + "post_attention_layernorm", D, cfg.rms_norm_eps);
    w.linear(b.q, l + "self_attn.q_proj", qd, D, cfg.attention_bias);
    w.linear(b.k, l + "self_attn.k_proj", kvd, D, cfg.attention_bias);
    w.linear(b.v, l + "self_attn.v_proj", kvd, D, cfg.attention_bias);
    w.linear(b.o, l + "self_attn.o_proj", D, qd, cfg.o_bias());
    w.linear(b.gate, l + "mlp.gate_proj", I, D, cfg.mlp_bias);
    w.linear(b.up, l + "mlp.up_proj", I, D, cfg.mlp_bias);
    w.linear(b.down, l + "mlp.down_proj", D, I, cfg.mlp_bias);
    b.n_head = cfg.num_attention_heads;
    b.n_kv_head = cfg.num_key_value_heads;
    b.head_dim = cfg.head_dim;
    b.window = cfg.layer_window(il);
  }
  w.rmsnorm(norm_, body + "norm", D, cfg.rms_norm_eps);
  if (tied_) {
    head_.w = cpu::LinearWeight(embed_, w.precision());
  } else {
    head_.w = cpu::LinearWeight(w.raw(head, {V, D}), w.precision());
    const std::string module = head.substr(0, head.size() - std::string(".weight").size());
    w.record([this, module](std::vector<nn::ParamSlot>& out) {
      std::vector<nn::ParamSlot> h;
      nn::linear_slots(module, head_, h);
      out.push_back(std::move(h[0]));
    });
    w.record_linear(module, &head_);
  }
  inv_freq_ = cfg.rope_inv_freq();
  stream_of_.clear();
  if (!cfg.mrope_section.empty()) {
    // Qwen2-VL: the frequency pairs are cut into mrope_section runs, taking the t, h, w stream in turn.
    for (size_t sidx = 0; sidx < cfg.mrope_section.size(); ++sidx)
      for (int j = 0; j < cfg.mrope_section[sidx]; ++j) stream_of_.push_back(int(sidx % 3));
    IRIS_CHECK(stream_of_.size() == inv_freq_.size(), "mrope_section sums to ", stream_of_.size(),
               " but a head has ", inv_freq_.size(), " rotary frequency pairs (head_dim / 2)");
  }
}

Positions Positions::range(int64_t start, int64_t T, int64_t n_streams) {
  Positions p;
  p.n_streams = n_streams;
  p.T = T;
  p.ids.resize(size_t(n_streams * T));
  for (int64_t s = 0; s < n_streams; ++s)
    for (int64_t t = 0; t < T; ++t) p.ids[size_t(s * T + t)] = start + t;
  return p;
}

int64_t Positions::max() const {
  int64_t m = -1;
  for (int64_t v : ids) m = std::max(m, v);
  return m;
}

ops::RopeTable Llama::rope(const Positions& pos) const {
  IRIS_CHECK(pos.n_streams == position_streams() && int64_t(pos.ids.size()) == pos.n_streams * pos.T,
             "the decoder takes ", position_streams(), " position stream(s), given ", pos.n_streams, " of ", pos.T,
             " positions");
  return ops::rope_table(pos.ids.data(), pos.T, pos.n_streams, stream_of_.empty() ? nullptr : stream_of_.data(),
                         inv_freq_.data(), int64_t(inv_freq_.size()));
}

nn::KVCache Llama::make_cache(int64_t max_tokens) const {
  return nn::KVCache(cfg_.num_hidden_layers, max_tokens, int64_t(cfg_.num_key_value_heads) * cfg_.head_dim);
}

void Llama::embed(const int32_t* ids, int64_t n, float* out) const {
  const int64_t D = cfg_.hidden_size, V = cfg_.vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    IRIS_CHECK(ids[i] >= 0 && ids[i] < V, "token id ", ids[i], " at position ", i, " is outside the vocabulary [0, ", V,
               ")");
    Tensor row = embed_.select(0, ids[i]);
    float* o = out + i * D;
    switch (row.dtype()) {
      case DType::F32: std::copy_n(row.data<float>(), D, o); break;
      case DType::BF16: for (int64_t j = 0; j < D; ++j) o[j] = bf16_to_f32(row.data_u16()[j]); break;
      case DType::F16: for (int64_t j = 0; j < D; ++j) o[j] = f16_to_f32(row.data_u16()[j]); break;
      default: IRIS_ASSERT(false);
    }
  }
}

void Llama::forward(float* x, int64_t T, const Positions& pos, nn::KVCache& cache, float* logits, bool all_logits,
                    const nn::Tap& tap) const {
  const int64_t pos0 = cache.size(), D = cfg_.hidden_size;
  IRIS_CHECK(pos0 + T <= cache.max_tokens(), "the sequence needs ", pos0 + T, " positions but the context holds ",
             cache.max_tokens());
  IRIS_CHECK(pos.T == T, "forward: ", pos.T, " positions for ", T, " rows");
  const ops::RopeTable tab = rope(pos);
  nn::Scratch s;
  for (int il = 0; il < int(layers_.size()); ++il) layers_[size_t(il)].forward(x, T, tab, pos0, cache, il, s, tap);
  cache.set_size(pos0 + T);
  norm_.forward(x, x, T);
  if (tap) tap("output_norm", -1, x, T, D);
  if (logits) {
    if (all_logits)
      head_.forward(x, T, logits);
    else
      head_.forward(x + (T - 1) * D, 1, logits);
  }
}

void Llama::decode_batch(float* x, int64_t n, const int64_t* pos, nn::KVCache* const* caches, float* logits) const {
  for (int64_t i = 0; i < n; ++i)
    IRIS_CHECK(caches[i]->size() < caches[i]->max_tokens(), "sequence ", i, ": the context (", caches[i]->max_tokens(),
               " positions) is full");
  Positions p;
  p.n_streams = position_streams();
  p.T = n;
  for (int64_t s = 0; s < p.n_streams; ++s) p.ids.insert(p.ids.end(), pos, pos + n);
  const ops::RopeTable tab = rope(p);
  nn::Scratch s;
  for (int il = 0; il < int(layers_.size()); ++il) layers_[size_t(il)].forward_batch(x, n, tab, caches, il, s);
  for (int64_t i = 0; i < n; ++i) caches[i]->set_size(caches[i]->size() + 1);
  norm_.forward(x, x, n);
  head_.forward(x, n, logits);
}

void Llama::forward_train(const float* x, int64_t T, const Positions& pos, LlamaActs& a, bool checkpointing) const {
  const int64_t D = cfg_.hidden_size;
  const int L = int(layers_.size());
  IRIS_CHECK(pos.T == T, "forward_train: ", pos.T, " positions for ", T, " rows");
  a.T = T;
  a.checkpointing = checkpointing;
  a.rope = rope(pos);
  a.layers.resize(size_t(checkpointing ? std::min(L, 1) : L));
  a.inputs.resize(checkpointing ? size_t(L) : 0);
  a.pre_norm.assign(x, x + T * D);
  float* h = a.pre_norm.data();
  for (int il = 0; il < L; ++il) {
    if (checkpointing) a.inputs[size_t(il)].assign(h, h + T * D);
    layers_[size_t(il)].forward_train(h, T, a.rope, a.layers[checkpointing ? 0 : size_t(il)]);
  }
  a.rstd.resize(size_t(T));
  a.out.resize(size_t(T * D));
  norm_.forward_train(h, a.out.data(), a.rstd.data(), T);
}

void Llama::backward(LlamaActs& a, float* dout, float* dx) const {
  const int64_t D = cfg_.hidden_size, T = a.T;
  const int L = int(layers_.size());
  // Without an input gradient, layers below the lowest one that trains need no backward.
  int lowest = 0;
  if (!dx) {
    lowest = L;
    for (int il = 0; il < L; ++il)
      if (layers_[size_t(il)].trains()) {
        lowest = il;
        break;
      }
  }
  norm_.backward(a.pre_norm.data(), a.rstd.data(), dout, dout, T);
  nn::Scratch s;
  for (int il = L - 1; il >= lowest; --il) {
    const nn::DecoderBlock& b = layers_[size_t(il)];
    if (a.checkpointing && il != L - 1) {  // recompute this layer's activations (the last one's are still there)
      std::vector<float> h = a.inputs[size_t(il)];
      b.forward_train(h.data(), T, a.rope, a.layers[0]);
    }
    b.backward(a.layers[a.checkpointing ? 0 : size_t(il)], T, a.rope, dout, s);
  }
  if (dx) std::copy_n(dout, T * D, dx);
}

void Llama::embed_backward(const int32_t* ids, int64_t n, const float* dx) const {
  if (!grad_embed_) return;
  ops::embedding_backward(ids, n, dx, grad_embed_, cfg_.vocab_size, cfg_.hidden_size);
}

bool Llama::trains() const {
  bool t = grad_embed_ || norm_.trains() || head_.trains();
  for (const auto& b : layers_) t = t || b.trains();
  return t;
}

}  // namespace iris::models
