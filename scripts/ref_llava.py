#!/usr/bin/python3
"""Independent fp32 reference for Hugging Face LLaVA-1.5 (`LlavaForConditionalGeneration`) and `LlamaForCausalLM`.

Plain torch, written from the Hugging Face transformers 4.47 modelling code (modeling_llama.py, modeling_clip.py,
modeling_llava.py, modeling_rope_utils.py) so golden files of any shape can be made without `transformers`.
Run it with Debian's /usr/bin/python3 (torch 1.13, numpy). Batch size 1, no padding, one image per prompt.

What it computes, as transformers does:
  CLIP vision tower: conv patch embedding (no bias), class token, learned positions, pre_layrnorm, pre-LN encoder
    layers (q/k/v/out_proj with biases, hidden_act), hidden_states = (pre_layrnorm(emb), layer 1, ..., layer L).
  LLaVA: hidden_states[vision_feature_layer] ("default" drops the class token, "full" keeps it), projector
    linear_2(act(linear_1(x))) (biases unless multimodal_projector_bias is false, a field of later transformers
    versions; 4.47 always has them), spliced in order at the image_token_index positions; positions 0..S-1.
  Llama: RMSNorm, rotate-half RoPE (default / linear / llama3 / dynamic inv_freq), GQA (repeat_kv), attention_bias,
    SiLU-gated MLP (mlp_bias), final norm, lm_head or the tied embeddings (tie_word_embeddings).
  Greedy decoding with a KV cache, no EOS stop, cross-checked against full recomputation.

CLI:
  ref_llava.py check DIR   compare with the reference files present in DIR (logits.npy, hidden_states.npy, ...)
  ref_llava.py run DIR [--out OUT] [--new-tokens N]   run DIR's inputs, print (and write) the outputs
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

torch.set_grad_enabled(False)

# ----------------------------------------------------------------------------------------------------------------
# safetensors
# ----------------------------------------------------------------------------------------------------------------
_ST_NP = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8}
_ST_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}


def read_safetensors(path):
    """Returns ({name: torch tensor}, {name: stored dtype}). Floating tensors are converted to float32 (exactly)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: header length {n} past the end of the file ({len(blob)} bytes)")
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = memoryview(blob)[8 + n:]
    out, dtypes = {}, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * _ST_SIZE[dt] or e > len(data):
            raise ValueError(f"{path}: tensor {name} has bad data_offsets {b},{e} for {dt} {shape}")
        raw = bytes(data[b:e])
        if dt == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_NP[dt]).newbyteorder("<"))
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float32)
        out[name] = torch.from_numpy(np.array(arr).reshape(shape))
        dtypes[name] = dt
    return out, dtypes


def write_safetensors(path, tensors):
    """tensors: {name: torch tensor (float32, bfloat16, float16, int64)}. Sorted-name order, no gaps, header padded
    with spaces to a multiple of 8, __metadata__ {"format": "pt"}."""
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    chunks, off = [], 0
    for name in names:
        t = tensors[name].contiguous()
        if t.dtype == torch.float32:
            dt, raw = "F32", t.numpy().astype("<f4").tobytes()
        elif t.dtype == torch.bfloat16:
            dt, raw = "BF16", t.view(torch.int16).numpy().astype("<i2").tobytes()
        elif t.dtype == torch.float16:
            dt, raw = "F16", t.numpy().astype("<f2").tobytes()
        elif t.dtype == torch.int64:
            dt, raw = "I64", t.numpy().astype("<i8").tobytes()
        else:
            raise ValueError(f"unsupported dtype {t.dtype} for {name}")
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for c in chunks:
            f.write(c)


def load_weights(folder):
    """All tensors of a Hugging Face folder (single file or sharded with model.safetensors.index.json)."""
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors(single)
    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        index = json.load(f)
    out, dtypes = {}, {}
    for shard in sorted(set(index["weight_map"].values())):
        w, d = read_safetensors(os.path.join(folder, shard))
        out.update(w)
        dtypes.update(d)
    return out, dtypes


# ----------------------------------------------------------------------------------------------------------------
# configs, with Hugging Face's defaults for absent (or null) fields
# ----------------------------------------------------------------------------------------------------------------
def _get(d, key, default):
    v = d.get(key)
    return default if v is None else v


class LlamaCfg:
    """LlamaConfig (transformers 4.47)."""

    def __init__(self, d):
        self.vocab_size = int(_get(d, "vocab_size", 32000))
        self.hidden_size = int(_get(d, "hidden_size", 4096))
        self.intermediate_size = int(_get(d, "intermediate_size", 11008))
        self.num_hidden_layers = int(_get(d, "num_hidden_layers", 32))
        self.num_attention_heads = int(_get(d, "num_attention_heads", 32))
        self.num_key_value_heads = int(_get(d, "num_key_value_heads", self.num_attention_heads))
        self.head_dim = int(_get(d, "head_dim", self.hidden_size // self.num_attention_heads))
        self.hidden_act = _get(d, "hidden_act", "silu")
        self.max_position_embeddings = int(_get(d, "max_position_embeddings", 2048))
        self.rms_norm_eps = float(_get(d, "rms_norm_eps", 1e-6))
        self.rope_theta = float(_get(d, "rope_theta", 10000.0))
        rs = d.get("rope_scaling")
        if rs is not None:
            rs = dict(rs)
            if "type" in rs:  # LlamaConfig.__init__: the legacy "type" key wins
                rs["rope_type"] = rs["type"]
        self.rope_scaling = rs
        self.partial_rotary_factor = float(_get(d, "partial_rotary_factor", 1.0))
        self.attention_bias = bool(_get(d, "attention_bias", False))
        self.mlp_bias = bool(_get(d, "mlp_bias", False))
        self.tie_word_embeddings = bool(_get(d, "tie_word_embeddings", False))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


class ClipCfg:
    """CLIPVisionConfig (transformers 4.47)."""

    def __init__(self, d):
        self.hidden_size = int(_get(d, "hidden_size", 768))
        self.intermediate_size = int(_get(d, "intermediate_size", 3072))
        self.num_hidden_layers = int(_get(d, "num_hidden_layers", 12))
        self.num_attention_heads = int(_get(d, "num_attention_heads", 12))
        self.num_channels = int(_get(d, "num_channels", 3))
        self.image_size = int(_get(d, "image_size", 224))
        self.patch_size = int(_get(d, "patch_size", 32))
        self.hidden_act = _get(d, "hidden_act", "quick_gelu")
        self.layer_norm_eps = float(_get(d, "layer_norm_eps", 1e-5))
        self.head_dim = self.hidden_size // self.num_attention_heads
        self.grid = self.image_size // self.patch_size
        self.num_patches = self.grid * self.grid
        self.num_positions = self.num_patches + 1


# LlavaConfig(vision_config=None) builds this CLIP config (llava-1.5 sized).
_LLAVA_DEFAULT_VISION = dict(intermediate_size=4096, hidden_size=1024, patch_size=14, image_size=336,
                             num_hidden_layers=24, num_attention_heads=16, projection_dim=768)


class LlavaCfg:
    """LlavaConfig (transformers 4.47; multimodal_projector_bias from later versions, default true)."""

    def __init__(self, d):
        vc = d.get("vision_config")
        if vc is not None and vc.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise ValueError(f"vision_config.model_type {vc.get('model_type')!r}: only clip_vision_model")
        self.vision = ClipCfg(vc if vc is not None else _LLAVA_DEFAULT_VISION)
        tc = d.get("text_config")
        if tc is not None and tc.get("model_type", "llama") != "llama":
            raise ValueError(f"text_config.model_type {tc.get('model_type')!r}: only llama")
        self.text = LlamaCfg(tc if tc is not None else {})
        self.image_token_index = int(_get(d, "image_token_index", 32000))
        self.projector_hidden_act = _get(d, "projector_hidden_act", "gelu")
        self.vision_feature_select_strategy = _get(d, "vision_feature_select_strategy", "default")
        if self.vision_feature_select_strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {self.vision_feature_select_strategy!r}")
        self.vision_feature_layer = _get(d, "vision_feature_layer", -2)
        if not isinstance(self.vision_feature_layer, int):
            raise ValueError("vision_feature_layer lists are not part of transformers 4.47")
        self.multimodal_projector_bias = bool(_get(d, "multimodal_projector_bias", True))

    def feature_index(self):
        """vision_feature_layer resolved as a Python index into the L+1 hidden states."""
        n = self.vision.num_hidden_layers + 1
        i = self.vision_feature_layer
        idx = i + n if i < 0 else i
        if not 0 <= idx < n:
            raise ValueError(f"vision_feature_layer {i} out of range for {n} hidden states")
        return idx

    def tokens_per_image(self):
        return self.vision.num_patches + (1 if self.vision_feature_select_strategy == "full" else 0)


def load_config(folder):
    """Returns (arch, cfg): ("llava", LlavaCfg), ("llama", LlamaCfg) or ("clip", ClipCfg)."""
    with open(os.path.join(folder, "config.json")) as f:
        d = json.load(f)
    arch = (d.get("architectures") or [None])[0]
    mt = d.get("model_type")
    if arch == "LlavaForConditionalGeneration" or mt == "llava":
        return "llava", LlavaCfg(d)
    if arch == "LlamaForCausalLM" or mt == "llama":
        return "llama", LlamaCfg(d)
    if arch in ("CLIPVisionModel", "CLIPVisionModelWithProjection") or mt == "clip_vision_model":
        return "clip", ClipCfg(d)
    raise ValueError(f"{folder}: unsupported architecture {arch!r} / model_type {mt!r}")


# ----------------------------------------------------------------------------------------------------------------
# building blocks
# ----------------------------------------------------------------------------------------------------------------
def act(name):
    """transformers' ACT2FN for the names these models use."""
    if name == "gelu":
        return lambda x: F.gelu(x)  # exact erf GELU
    if name in ("gelu_new", "gelu_fast", "gelu_pytorch_tanh"):
        if name == "gelu_new":
            return lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
        if name == "gelu_fast":
            return lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("silu", "swish"):
        return F.silu
    if name == "relu":
        return F.relu
    if name == "tanh":
        return torch.tanh
    raise ValueError(f"unsupported activation {name!r}")


def linear(x, W, prefix, bias):
    """nn.Linear: x @ weight^T + bias, weights by Hugging Face name."""
    y = x @ W[prefix + ".weight"].t()
    if bias:
        y = y + W[prefix + ".bias"]
    return y


def layer_norm(x, W, prefix, eps):
    return F.layer_norm(x, (x.shape[-1],), W[prefix + ".weight"], W[prefix + ".bias"], eps)


def rms_norm(x, w, eps):
    """LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight (all fp32)."""
    var = x.pow(2).mean(-1, keepdim=True)
    return w * (x * torch.rsqrt(var + eps))


def rope_inv_freq(cfg):
    """(dim/2,) float32 inverse frequencies and the attention scaling, as modeling_rope_utils computes them."""
    dim = int(cfg.head_dim * cfg.partial_rotary_factor)
    base = cfg.rope_theta
    rs = cfg.rope_scaling
    rope_type = "default" if rs is None else rs.get("rope_type", rs.get("type", "default"))
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))  # float32
    scaling = 1.0
    if rope_type == "default":
        pass
    elif rope_type == "linear":
        inv_freq = inv_freq / rs["factor"]
    elif rope_type == "dynamic":
        # At init transformers uses seq_len = max_position_embeddings, which leaves base unchanged; it only
        # grows once a sequence exceeds max_position_embeddings (not supported here).
        pass
    elif rope_type == "llama3":
        factor = rs["factor"]
        low_freq_factor = rs["low_freq_factor"]
        high_freq_factor = rs["high_freq_factor"]
        old_context_len = rs["original_max_position_embeddings"]
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        inv_freq = torch.where(is_medium, smoothed, inv_freq_llama)
    else:
        raise ValueError(f"unsupported rope_type {rope_type!r}")
    return inv_freq.float(), scaling


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Llama decoder
# ----------------------------------------------------------------------------------------------------------------
class Llama:
    """LlamaForCausalLM over a weight dict. body: prefix of embed_tokens/layers/norm ("model." or
    "language_model.model."); head: the lm_head weight name (ignored when tie_word_embeddings)."""

    def __init__(self, W, cfg, body="model.", head="lm_head.weight"):
        self.W, self.cfg, self.body = W, cfg, body
        self.embed_w = W[body + "embed_tokens.weight"]
        self.head_w = self.embed_w if cfg.tie_word_embeddings else W[head]
        self.inv_freq, self.attn_scaling = rope_inv_freq(cfg)
        self.act = act(cfg.hidden_act)

    def embed(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        if ids.min() < 0 or ids.max() >= self.cfg.vocab_size:
            raise ValueError("token id out of range")
        return self.embed_w[ids]

    def new_cache(self):
        return [[None, None] for _ in range(self.cfg.num_hidden_layers)]

    def forward(self, x, cache=None, pos0=0, collect=False):
        """x (T, D) embeddings at positions pos0..pos0+T-1. cache: list of [k, v] per layer (grown in place) or None.
        Returns (logits (T, V), hidden_states list: [emb, layer 1, ..., layer L-1, final-normed] when collect)."""
        c, W = self.cfg, self.W
        T = x.shape[0]
        H, Hkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        pos = torch.arange(pos0, pos0 + T, dtype=torch.int64).float()
        freqs = pos[:, None] * self.inv_freq[None, :]  # (T, dim/2), fp32 as HF's 1-deep matmul
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos() * self.attn_scaling, emb.sin() * self.attn_scaling
        rot = cos.shape[-1]
        hs = [x] if collect else None
        h = x
        for il in range(c.num_hidden_layers):
            p = f"{self.body}layers.{il}."
            res = h
            a = rms_norm(h, W[p + "input_layernorm.weight"], c.rms_norm_eps)
            q = linear(a, W, p + "self_attn.q_proj", c.attention_bias).view(T, H, hd).transpose(0, 1)
            k = linear(a, W, p + "self_attn.k_proj", c.attention_bias).view(T, Hkv, hd).transpose(0, 1)
            v = linear(a, W, p + "self_attn.v_proj", c.attention_bias).view(T, Hkv, hd).transpose(0, 1)
            q = torch.cat((q[..., :rot] * cos + rotate_half(q[..., :rot]) * sin, q[..., rot:]), dim=-1)
            k = torch.cat((k[..., :rot] * cos + rotate_half(k[..., :rot]) * sin, k[..., rot:]), dim=-1)
            if cache is not None:
                if cache[il][0] is not None:
                    k = torch.cat((cache[il][0], k), dim=1)
                    v = torch.cat((cache[il][1], v), dim=1)
                cache[il][0], cache[il][1] = k, v
            Tk = k.shape[1]
            kk = k.repeat_interleave(H // Hkv, dim=0)  # repeat_kv: head h uses kv head h // (H/Hkv)
            vv = v.repeat_interleave(H // Hkv, dim=0)
            scores = (q @ kk.transpose(1, 2)) * (hd ** -0.5)  # (H, T, Tk)
            qpos = torch.arange(Tk - T, Tk)[:, None]
            kpos = torch.arange(Tk)[None, :]
            scores = scores.masked_fill(kpos > qpos, float("-inf"))
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32)
            o = (probs @ vv).transpose(0, 1).reshape(T, H * hd)
            h = res + linear(o, W, p + "self_attn.o_proj", c.attention_bias)
            res = h
            m = rms_norm(h, W[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
            g = self.act(linear(m, W, p + "mlp.gate_proj", c.mlp_bias)) * linear(m, W, p + "mlp.up_proj", c.mlp_bias)
            h = res + linear(g, W, p + "mlp.down_proj", c.mlp_bias)
            if collect and il + 1 < c.num_hidden_layers:
                hs.append(h)
        h = rms_norm(h, W[self.body + "norm.weight"], c.rms_norm_eps)
        if collect:
            hs.append(h)
        logits = h @ self.head_w.t()
        return logits, hs


def greedy(lm, prompt_emb, n_new, embed_fn=None, recompute_fn=None):
    """Greedy decoding with a KV cache (no EOS stop). Returns (ids, prompt logits (S,V), step margins, step logits).
    recompute_fn(ids) -> (S+i, V) logits, when given, checks every step against full recomputation."""
    cache = lm.new_cache()
    logits, _ = lm.forward(prompt_emb, cache, 0)
    prompt_logits = logits
    last = logits[-1]
    S = prompt_emb.shape[0]
    out, margins = [], []
    for i in range(n_new):
        top2 = torch.topk(last, 2)
        margins.append(float(top2.values[0] - top2.values[1]))
        tok = int(top2.indices[0])
        out.append(tok)
        if recompute_fn is not None:
            full = recompute_fn(out[:-1])
            if int(torch.argmax(full[-1])) != tok:
                raise RuntimeError(f"KV-cache and full recomputation disagree at step {i}")
        x = (embed_fn or lm.embed)([tok])
        lg, _ = lm.forward(x, cache, S + i)
        last = lg[-1]
    return out, prompt_logits, margins


def top_margins(logits):
    """top1 - top2 per row of (S, V)."""
    t = torch.topk(logits, 2, dim=-1).values
    return (t[:, 0] - t[:, 1])


# ----------------------------------------------------------------------------------------------------------------
# CLIP vision tower
# ----------------------------------------------------------------------------------------------------------------
class ClipVision:
    """CLIPVisionTransformer over a weight dict; prefix e.g. "vision_tower.vision_model." or "vision_model."."""

    def __init__(self, W, cfg, prefix):
        self.W, self.cfg, self.p = W, cfg, prefix
        self.act = act(cfg.hidden_act)

    def forward(self, px, n_layers=None):
        """px (1, C, H, W) -> hidden_states list [(T, D)] of length n_layers+1: [0] = pre_layrnorm(embeddings),
        [i] = output of encoder layer i. T = patches + 1, class token first."""
        c, W, p = self.cfg, self.W, self.p
        if px.shape[-1] != c.image_size or px.shape[-2] != c.image_size:
            raise ValueError(f"image {tuple(px.shape)} != image_size {c.image_size} (no position interpolation)")
        n_layers = c.num_hidden_layers if n_layers is None else n_layers
        pe = F.conv2d(px.float(), W[p + "embeddings.patch_embedding.weight"], stride=c.patch_size)  # (1, D, g, g)
        pe = pe.flatten(2).transpose(1, 2)[0]  # (g*g, D) row by row
        cls = W[p + "embeddings.class_embedding"].reshape(1, -1)
        x = torch.cat((cls, pe), dim=0) + W[p + "embeddings.position_embedding.weight"][: c.num_positions]
        x = layer_norm(x, W, p + "pre_layrnorm", c.layer_norm_eps)
        hs = [x]
        T, D, H, hd = x.shape[0], c.hidden_size, c.num_attention_heads, c.head_dim
        for il in range(n_layers):
            q = f"{p}encoder.layers.{il}."
            res = x
            a = layer_norm(x, W, q + "layer_norm1", c.layer_norm_eps)
            qq = (linear(a, W, q + "self_attn.q_proj", True) * (hd ** -0.5)).view(T, H, hd).transpose(0, 1)
            kk = linear(a, W, q + "self_attn.k_proj", True).view(T, H, hd).transpose(0, 1)
            vv = linear(a, W, q + "self_attn.v_proj", True).view(T, H, hd).transpose(0, 1)
            probs = torch.softmax(qq @ kk.transpose(1, 2), dim=-1)
            o = (probs @ vv).transpose(0, 1).reshape(T, D)
            x = res + linear(o, W, q + "self_attn.out_proj", True)
            res = x
            m = layer_norm(x, W, q + "layer_norm2", c.layer_norm_eps)
            x = res + linear(self.act(linear(m, W, q + "mlp.fc1", True)), W, q + "mlp.fc2", True)
            hs.append(x)
        return hs

    def post_layernorm(self, x):
        return layer_norm(x, self.W, self.p + "post_layernorm", self.cfg.layer_norm_eps)


# ----------------------------------------------------------------------------------------------------------------
# LLaVA
# ----------------------------------------------------------------------------------------------------------------
class Llava:
    def __init__(self, W, cfg):
        self.W, self.cfg = W, cfg
        self.vision = ClipVision(W, cfg.vision, "vision_tower.vision_model.")
        self.lm = Llama(W, cfg.text, "language_model.model.", "language_model.lm_head.weight")
        self.proj_act = act(cfg.projector_hidden_act)

    def image_features(self, px):
        """Returns dict: selected_layer (T, Dv) class token first, features (N, Dv), projector_output (N, Dt)."""
        c = self.cfg
        hs = self.vision.forward(px)
        sel = hs[c.feature_index()]
        feat = sel[1:] if c.vision_feature_select_strategy == "default" else sel
        b = c.multimodal_projector_bias
        y = linear(self.proj_act(linear(feat, self.W, "multi_modal_projector.linear_1", b)), self.W,
                   "multi_modal_projector.linear_2", b)
        return {"selected_layer": sel, "features": feat, "projector_output": y}

    def embed_prompt(self, ids, image_rows):
        """Embeds ids and overwrites the image-token rows, in order, with image_rows (masked_scatter)."""
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        x = self.lm.embed(ids).clone()
        mask = ids == self.cfg.image_token_index
        n = int(mask.sum())
        if n != (0 if image_rows is None else image_rows.shape[0]):
            raise ValueError(f"Image features and image tokens do not match: tokens {n}, features "
                             f"{0 if image_rows is None else image_rows.shape[0]}")
        if n:
            x[mask] = image_rows
        return x


# ----------------------------------------------------------------------------------------------------------------
# running a folder
# ----------------------------------------------------------------------------------------------------------------
def _npy(folder, name):
    path = os.path.join(folder, name)
    return np.load(path) if os.path.exists(path) else None


def run_folder(folder, n_new=8, ids=None, px=None, check_recompute=True):
    """Runs a model folder on its inputs (or on ids/px given). Returns a dict of numpy outputs:
    logits (1,S,V), generated_ids (1,n), hidden_states, projector_output (1,N,D), vision_selected_layer,
    vision_selected_features, last_hidden_state, pooler_output; plus margins."""
    arch, cfg = load_config(folder)
    W, _ = load_weights(folder)
    out = {}
    if arch == "clip":
        vt = ClipVision(W, cfg, "vision_model.")
        px = torch.from_numpy(_npy(folder, "pixel_values.npy") if px is None else px)
        hs = vt.forward(px)
        out["hidden_states"] = torch.stack(hs).numpy()
        out["last_hidden_state"] = hs[-1][None].numpy()
        out["pooler_output"] = vt.post_layernorm(hs[-1][:1]).numpy()
        return arch, out
    if ids is None:
        ids = _npy(folder, "input_ids.npy")
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    if arch == "llava":
        model = Llava(W, cfg)
        lm = model.lm
        if px is None:
            px = _npy(folder, "pixel_values.npy")
        if any(i == cfg.image_token_index for i in ids):
            feats = model.image_features(torch.from_numpy(np.asarray(px, dtype=np.float32)))
            rows = feats["projector_output"]
            out["vision_selected_layer"] = feats["selected_layer"][None].numpy()
            out["vision_selected_features"] = feats["features"][None].numpy()
            out["projector_output"] = rows[None].numpy()
        else:
            rows = None
        emb = model.embed_prompt(ids, rows)
        # Generated tokens are embedded as plain tokens (as in HF generate, where pixel_values only enter the first
        # step), even the image token id.
        recompute = ((lambda gen: lm.forward(torch.cat((emb, lm.embed(gen)), 0) if gen else emb)[0])
                     if check_recompute else None)
    else:
        lm = Llama(W, cfg, "model.", "lm_head.weight")
        emb = lm.embed(ids)
        recompute = (lambda gen: lm.forward(lm.embed(ids + gen))[0]) if check_recompute else None
    full_logits, hs = lm.forward(emb, None, 0, collect=True)
    gen, cached_prompt_logits, margins = greedy(lm, emb, n_new, recompute_fn=recompute)
    if not torch.allclose(full_logits, cached_prompt_logits, atol=1e-6, rtol=0):
        raise RuntimeError("prompt logits differ between the cached and uncached paths")
    out["logits"] = full_logits[None].numpy()
    out["hidden_states"] = torch.stack(hs).numpy()
    out["generated_ids"] = np.array([gen], dtype=np.int64)
    out["_gen_margins"] = margins
    out["_prompt_margins"] = top_margins(full_logits).numpy()
    return arch, out


def check_folder(folder, n_new=None):
    """Compares the outputs with every reference file present. Returns True when all match."""
    gen_ref = _npy(folder, "generated_ids.npy")
    n_new = n_new or (gen_ref.shape[-1] if gen_ref is not None else 8)
    arch, out = run_folder(folder, n_new)
    ok = True
    tol = {"logits": 1e-5}
    print(f"{folder} ({arch})")
    for name, mine in sorted(out.items()):
        if name.startswith("_"):
            continue
        ref = _npy(folder, name + ".npy")
        if ref is None:
            continue
        if ref.shape != mine.shape:
            print(f"  {name:28s} shape {mine.shape} != reference {ref.shape}  FAIL")
            ok = False
            continue
        if ref.dtype.kind in "iu":
            same = bool((ref == mine).all())
            print(f"  {name:28s} {'exact match' if same else 'MISMATCH'}  mine={mine.tolist()} ref={ref.tolist()}")
            ok &= same
        else:
            d = float(np.abs(ref.astype(np.float64) - mine.astype(np.float64)).max())
            bound = tol.get(name, 1e-5)
            print(f"  {name:28s} max|diff| = {d:.3e}  (<= {bound:g}: {'ok' if d <= bound else 'FAIL'})")
            ok &= d <= bound
    if "_gen_margins" in out:
        print(f"  min greedy margin {min(out['_gen_margins']):.4f}, min prompt margin "
              f"{float(out['_prompt_margins'].min()):.4f}")
    return ok


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the reference files in each folder")
    c.add_argument("dirs", nargs="+")
    r = sub.add_parser("run", help="run a folder's inputs and print / write the outputs")
    r.add_argument("dir")
    r.add_argument("--out", help="folder to write the outputs as .npy")
    r.add_argument("--new-tokens", type=int, default=8)
    a = ap.parse_args(argv)
    if a.cmd == "check":
        ok = all([check_folder(d) for d in a.dirs])
        print("ALL OK" if ok else "SOME FAILED")
        return 0 if ok else 1
    arch, out = run_folder(a.dir, a.new_tokens)
    for name, v in sorted(out.items()):
        if name.startswith("_"):
            continue
        print(f"{name}: shape {v.shape} dtype {v.dtype}")
    if "generated_ids" in out:
        print("generated_ids:", out["generated_ids"].tolist())
        print(f"min greedy margin {min(out['_gen_margins']):.4f}, min prompt margin "
              f"{float(out['_prompt_margins'].min()):.4f}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for name, v in out.items():
            if not name.startswith("_"):
                np.save(os.path.join(a.out, name + ".npy"), v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
