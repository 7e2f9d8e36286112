#!/usr/bin/python3
"""Independent fp32 reference for Hugging Face Qwen2-VL (`Qwen2VLForConditionalGeneration`, transformers 4.47) and
Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`, transformers 4.49-4.51), with `Qwen2VLImageProcessor`.

Plain torch + numpy + PIL, written from the transformers modelling code (modeling_qwen2_vl.py,
modeling_qwen2_5_vl.py, image_processing_qwen2_vl.py, the two configuration files) so that golden files can be
made without `transformers`. Run it with Debian's /usr/bin/python3 (torch 1.13, numpy 1.24, Pillow 9.4).
Batch size 1, no padding, images only (no video).

What it computes, as transformers does:
  Processor: convert to RGB, smart_resize(h, w, factor = patch * merge, min_pixels, max_pixels), Pillow BICUBIC
    resize of the uint8 image, x = float32(float64(u8) * rescale_factor), (x - mean) / std in float32, the frame
    repeated over temporal_patch_size, patchified to (grid_t*grid_h*grid_w, C*tp*p*p) with the rows grouped by
    merge block (block row, block col, row in block, col in block) and each row ordered (c, t, py, px).
  Vision (Qwen2-VL): patch embedding (Conv3d without bias == one matmul on the rows), 2-D rotary embedding
    (head_dim/2 rotary dims: half of them rotate with the patch row, half with the patch column), blocks
    x += proj(attn(norm1 x)); x += fc2(act(fc1(norm2 x))) with LayerNorm eps 1e-6, attention only inside each
    image (cu_seqlens), PatchMerger: LayerNorm ln_q (eps 1e-6) per patch row, 4 consecutive rows concatenated,
    mlp.0, exact GELU, mlp.2.
  Vision (Qwen2.5-VL): RMSNorm (eps 1e-6) instead of LayerNorm, SwiGLU MLP with biases
    down(act(gate x) * up x), window attention: the merge units (groups of merge^2 consecutive rows) are reordered
    window by window (get_window_index), every block except fullatt_block_indexes attends inside its window only,
    the full-attention blocks attend inside the image; merger with RMSNorm ln_q; then the merged rows are put back
    in the original order.
  Decoder (Qwen2): RMSNorm, q/k/v with bias, o_proj without, GQA, SwiGLU, M-RoPE (mrope_section over the t/h/w
    position streams), final norm, lm_head (or the embeddings when tie_word_embeddings).
  get_rope_index (3-D positions of the prompt), mrope_position_deltas for decoding, image-token splicing, greedy
    decoding with a KV cache (no EOS stop) checked against full recomputation.

CLI:
  ref_qwen2_vl.py check DIR [DIR ...]   recompute each case folder (processor on its images when the folder
                                        names them, model on the saved pixel_values / input_ids; a folder
                                        without pixel_values.npy: on the processor's output, checked against
                                        meta.json pixel_values sha256) and compare
  ref_qwen2_vl.py run DIR [--out OUT]   run a folder's inputs and print (and write) the outputs
  ref_qwen2_vl.py selftest [DIR ...]    check the window reordering against a mask-only vision tower
  ref_qwen2_vl.py smart_resize H W [--min-pixels N] [--max-pixels N] [--factor F]
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_llava import (_get, act, load_weights, rms_norm, rotate_half, top_margins,  # noqa: E402
                       read_safetensors, write_safetensors)

torch.set_grad_enabled(False)

__all__ = ["read_safetensors", "write_safetensors", "smart_resize", "ImageProcessor", "Qwen2VLCfg", "Qwen2VL",
           "get_rope_index", "run_folder", "check_folder"]

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# ----------------------------------------------------------------------------------------------------------------
# image processor
# ----------------------------------------------------------------------------------------------------------------
def smart_resize(height, width, factor=28, min_pixels=56 * 56, max_pixels=14 * 14 * 4 * 1280):
    """transformers 4.47 image_processing_qwen2_vl.smart_resize. All arithmetic in Python floats (float64);
    round() is Python's (ties to even). Raises ValueError like transformers."""
    if height < factor or width < factor:
        raise ValueError(f"height:{height} or width:{width} must be larger than factor:{factor}")
    elif max(height, width) / min(height, width) > 200:
        raise ValueError(f"absolute aspect ratio must be smaller than 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


class ImageProcessor:
    """Qwen2VLImageProcessor (transformers 4.47) from a preprocessor_config.json dict."""

    def __init__(self, d=None):
        d = dict(d or {})
        self.do_resize = bool(_get(d, "do_resize", True))
        self.resample = int(_get(d, "resample", 3))
        self.do_rescale = bool(_get(d, "do_rescale", True))
        self.rescale_factor = float(_get(d, "rescale_factor", 1 / 255))
        self.do_normalize = bool(_get(d, "do_normalize", True))
        self.image_mean = list(_get(d, "image_mean", OPENAI_CLIP_MEAN))
        self.image_std = list(_get(d, "image_std", OPENAI_CLIP_STD))
        self.do_convert_rgb = bool(_get(d, "do_convert_rgb", True))
        size = d.get("size") or {}
        # 4.47 reads the top-level min_pixels / max_pixels (its `size` is derived from them). Later versions take
        # `size` ({"shortest_edge", "longest_edge"}) first; use it only when the top-level fields are absent.
        self.min_pixels = int(_get(d, "min_pixels", size.get("min_pixels", size.get("shortest_edge", 56 * 56))))
        self.max_pixels = int(_get(d, "max_pixels", size.get("max_pixels", size.get("longest_edge", 28 * 28 * 1280))))
        self.patch_size = int(_get(d, "patch_size", 14))
        self.temporal_patch_size = int(_get(d, "temporal_patch_size", 2))
        self.merge_size = int(_get(d, "merge_size", 2))

    def config_dict(self):
        """The preprocessor_config.json that transformers 4.47 writes for these settings."""
        return {
            "do_convert_rgb": self.do_convert_rgb, "do_normalize": self.do_normalize, "do_rescale": self.do_rescale,
            "do_resize": self.do_resize, "image_mean": self.image_mean, "image_processor_type": "Qwen2VLImageProcessor",
            "image_std": self.image_std, "max_pixels": self.max_pixels, "merge_size": self.merge_size,
            "min_pixels": self.min_pixels, "patch_size": self.patch_size, "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "size": {"max_pixels": self.max_pixels, "min_pixels": self.min_pixels},
            "temporal_patch_size": self.temporal_patch_size,
        }

    def resize_u8(self, img):
        """PIL image -> (uint8 HxWx3 after convert + smart resize, (orig h, w))."""
        from PIL import Image
        if self.do_convert_rgb and img.mode != "RGB":
            img = img.convert("RGB")  # RGBA: alpha dropped; L: copied to the 3 channels
        w, h = img.size
        if self.do_resize:
            rh, rw = smart_resize(h, w, factor=self.patch_size * self.merge_size,
                                  min_pixels=self.min_pixels, max_pixels=self.max_pixels)
            img = img.resize((rw, rh), resample=Image.Resampling(self.resample), reducing_gap=None)
        return np.asarray(img, dtype=np.uint8).copy(), (h, w)

    def normalize_u8(self, u8):
        """uint8 HxWxC -> float32 HxWxC exactly as transformers: float64 multiply, cast, float32 (x-mean)/std."""
        x = u8
        if self.do_rescale:
            x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
        if self.do_normalize:
            x = x.astype(np.float32)
            mean = np.array(self.image_mean, dtype=np.float32)
            std = np.array(self.image_std, dtype=np.float32)
            x = (x - mean) / std
        return x.astype(np.float32)

    def patchify(self, x):
        """float32 HxWxC -> (rows (gt*gh*gw, C*tp*p*p), (gt, gh, gw))."""
        p, tp, m = self.patch_size, self.temporal_patch_size, self.merge_size
        chw = np.transpose(x, (2, 0, 1))[None]  # (1, C, H, W)
        frames = np.tile(chw, (tp, 1, 1, 1))  # the image fills every temporal slot
        T, C, H, W = frames.shape
        gt, gh, gw = T // tp, H // p, W // p
        a = frames.reshape(gt, tp, C, gh // m, m, p, gw // m, m, p)
        a = a.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # gt, bh, bw, mh, mw, C, tp, py, px
        return np.ascontiguousarray(a.reshape(gt * gh * gw, C * tp * p * p)), (gt, gh, gw)

    def __call__(self, images):
        """images: list of PIL images (one processor call). Returns dict pixel_values (N, D) float32,
        image_grid_thw (n, 3) int64, resized_u8 list, orig_hw list."""
        rows, grids, resized, orig = [], [], [], []
        for img in images:
            u8, hw = self.resize_u8(img)
            r, g = self.patchify(self.normalize_u8(u8))
            rows.append(r)
            grids.append(g)
            resized.append(u8)
            orig.append(hw)
        return {"pixel_values": np.concatenate(rows, 0), "image_grid_thw": np.array(grids, dtype=np.int64),
                "resized_u8": resized, "orig_hw": orig}


# ----------------------------------------------------------------------------------------------------------------
# configs, with Hugging Face's defaults for absent (or null) fields
# ----------------------------------------------------------------------------------------------------------------
class Qwen2VLCfg:
    """Qwen2VLConfig (4.47) / Qwen2_5_VLConfig (4.49-4.51). Text fields are top level (the hub layout); a
    `text_config` dict (later transformers layout) is read on top of them."""

    def __init__(self, d):
        arch = (d.get("architectures") or [None])[0]
        mt = d.get("model_type")
        if arch == "Qwen2_5_VLForConditionalGeneration" or mt == "qwen2_5_vl":
            self.kind = "qwen2_5_vl"
        elif arch == "Qwen2VLForConditionalGeneration" or mt == "qwen2_vl":
            self.kind = "qwen2_vl"
        else:
            raise ValueError(f"unsupported architecture {arch!r} / model_type {mt!r}")
        t = dict(d)
        if isinstance(d.get("text_config"), dict):
            t.update(d["text_config"])
        self.vocab_size = int(_get(t, "vocab_size", 152064))
        self.hidden_size = int(_get(t, "hidden_size", 8192))
        self.intermediate_size = int(_get(t, "intermediate_size", 29568))
        self.num_hidden_layers = int(_get(t, "num_hidden_layers", 80))
        self.num_attention_heads = int(_get(t, "num_attention_heads", 64))
        self.num_key_value_heads = int(_get(t, "num_key_value_heads", 8))
        self.head_dim = self.hidden_size // self.num_attention_heads  # a head_dim field is ignored, as in HF
        self.hidden_act = _get(t, "hidden_act", "silu")
        self.rms_norm_eps = float(_get(t, "rms_norm_eps", 1e-5))
        self.rope_theta = float(_get(t, "rope_theta", 1000000.0))
        self.tie_word_embeddings = bool(_get(t, "tie_word_embeddings", False))
        # Sliding window as current transformers applies it (Qwen2Config / Qwen2VLTextConfig): sliding_window is
        # None unless use_sliding_window; layer_types (default: "sliding_attention" for layers >= max_window_layers)
        # picks the layers; such a layer's query at cache index i sees keys i - sliding_window < j <= i.
        self.use_sliding_window = bool(_get(t, "use_sliding_window", False))
        self.sliding_window = _get(t, "sliding_window", None)
        self.max_window_layers = int(_get(t, "max_window_layers", self.num_hidden_layers))
        self.layer_types = t.get("layer_types")
        if self.layer_types is not None and len(self.layer_types) != self.num_hidden_layers:
            raise ValueError("layer_types must list every layer")
        rs = t.get("rope_scaling") or t.get("rope_parameters")
        if not rs or "mrope_section" not in rs:
            raise ValueError("rope_scaling.mrope_section is required (Qwen2-VL attention indexes it)")
        rtype = rs.get("rope_type", rs.get("type", "default"))
        if rtype not in ("mrope", "default"):
            raise ValueError(f"rope type {rtype!r} not supported")
        self.mrope_section = [int(s) for s in rs["mrope_section"]]
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != self.head_dim // 2:
            raise ValueError(f"mrope_section {self.mrope_section} must have 3 parts summing to head_dim/2 = "
                             f"{self.head_dim // 2}")
        if self.hidden_size % self.num_attention_heads or self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("bad head counts")
        q25 = self.kind == "qwen2_5_vl"
        self.image_token_id = int(_get(d, "image_token_id", 151655))
        self.video_token_id = int(_get(d, "video_token_id", 151656))
        self.vision_start_token_id = int(_get(d, "vision_start_token_id", 151652))
        self.vision_end_token_id = int(_get(d, "vision_end_token_id", 151653))

        v = d.get("vision_config") or {}
        self.v_depth = int(_get(v, "depth", 32))
        self.v_num_heads = int(_get(v, "num_heads", 16))
        # HF reads `in_channels`; hub files write `in_chans`, which HF ignores (the default 3 applies).
        self.v_in_channels = int(_get(v, "in_channels", _get(v, "in_chans", 3)))
        self.v_patch_size = int(_get(v, "patch_size", 14))
        self.v_merge = int(_get(v, "spatial_merge_size", 2))
        self.v_temporal_patch_size = int(_get(v, "temporal_patch_size", 2))
        if q25:
            self.v_embed = int(_get(v, "hidden_size", 3584))
            self.v_out = int(_get(v, "out_hidden_size", 3584))
            self.v_mlp_hidden = int(_get(v, "intermediate_size", 3420))
            self.v_act = _get(v, "hidden_act", "silu")
            self.v_window_size = int(_get(v, "window_size", 112))
            self.v_fullatt = [int(i) for i in _get(v, "fullatt_block_indexes", [7, 15, 23, 31])]
            self.v_tokens_per_second = _get(v, "tokens_per_second", 4)
        else:
            self.v_embed = int(_get(v, "embed_dim", 1280))
            self.v_out = int(_get(v, "hidden_size", 3584))
            self.v_mlp_hidden = int(self.v_embed * _get(v, "mlp_ratio", 4))
            self.v_act = _get(v, "hidden_act", "quick_gelu")
            self.v_window_size = None
            self.v_fullatt = None
        if self.v_embed % self.v_num_heads or (self.v_embed // self.v_num_heads) % 4:
            raise ValueError("vision head_dim must be a multiple of 4 (2-D rotary)")
        if self.v_out != self.hidden_size:
            raise ValueError(f"vision output width {self.v_out} != text hidden_size {self.hidden_size}")


def layer_window(cfg, il):
    """Window of decoder layer il (None: full causal attention)."""
    if not cfg.use_sliding_window or cfg.sliding_window is None:
        return None
    if cfg.layer_types is not None:
        sliding = cfg.layer_types[il] == "sliding_attention"
    else:
        sliding = il >= cfg.max_window_layers
    return int(cfg.sliding_window) if sliding else None


def load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return Qwen2VLCfg(json.load(f))


# ----------------------------------------------------------------------------------------------------------------
# vision tower
# ----------------------------------------------------------------------------------------------------------------
def _lin(x, W, name, bias=True):
    y = x @ W[name + ".weight"].t()
    if bias:
        y = y + W[name + ".bias"]
    return y


def vision_rotary(grid_thw, head_dim, merge):
    """(N, head_dim/2) rotary angles for the patch rows in pixel_values order: the first head_dim/4 angles are
    row * inv_freq, the next head_dim/4 are col * inv_freq, inv_freq_i = 10000^(-2i/(head_dim/2)) (float32, as
    VisionRotaryEmbedding(head_dim // 2))."""
    dim = head_dim // 2
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    pos = []
    for t, h, w in grid_thw.tolist():
        hh = torch.arange(h)[:, None].expand(h, w)
        ww = torch.arange(w)[None, :].expand(h, w)
        def grouped(a):
            return a.reshape(h // merge, merge, w // merge, merge).permute(0, 2, 1, 3).reshape(-1)
        pos.append(torch.stack([grouped(hh), grouped(ww)], dim=-1).repeat(t, 1))
    pos = torch.cat(pos, 0)
    max_grid = int(grid_thw[:, 1:].max())
    table = torch.outer(torch.arange(max_grid, dtype=torch.float), inv_freq)  # (max_grid, dim/2)
    return table[pos].flatten(1)  # (N, dim)


def get_window_index(grid_thw, window_size, merge, patch):
    """Qwen2.5-VL get_window_index. Returns (window_index (n_merged,) int64 = for each position of the reordered
    sequence, which merge unit (in original order) goes there; cu_window_seqlens list in patch rows, with the
    duplicate entries of empty (all-padding) windows still in it, as HF builds it before unique_consecutive)."""
    vm = window_size // merge // patch  # window side in merged tokens
    window_index, cu = [], [0]
    base = 0
    for t, h, w in grid_thw.tolist():
        lh, lw = h // merge, w // merge
        idx = torch.arange(t * lh * lw).reshape(t, lh, lw)
        pad_h = vm - lh % vm  # a whole extra window of padding when lh % vm == 0 (it stays empty)
        pad_w = vm - lw % vm
        nh, nw = (lh + pad_h) // vm, (lw + pad_w) // vm
        pad = F.pad(idx, (0, pad_w, 0, pad_h), "constant", -100)
        pad = pad.reshape(t, nh, vm, nw, vm).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, vm, vm)
        seqlens = (pad != -100).sum([2, 3]).reshape(-1)
        flat = pad.reshape(-1)
        window_index.append(flat[flat != -100] + base)
        cu.extend((seqlens.cumsum(0) * merge * merge + cu[-1]).tolist())
        base += t * lh * lw
    return torch.cat(window_index), cu


def _block_attention(x, W, p, cfg, cos, sin, cu):
    """Vision self-attention with fused qkv, rotary on q/k, attention inside each [cu[i], cu[i+1]) block."""
    N, E = x.shape
    H = cfg.v_num_heads
    hd = E // H
    qkv = _lin(x, W, p + "attn.qkv").reshape(N, 3, H, hd).permute(1, 0, 2, 3)
    q, k, v = qkv[0], qkv[1], qkv[2]  # (N, H, hd)
    c, s = cos[:, None, :], sin[:, None, :]
    q = q * c + rotate_half(q) * s
    k = k * c + rotate_half(k) * s
    out = torch.empty_like(q)
    for a, b in zip(cu[:-1], cu[1:]):
        if b <= a:
            continue
        qq, kk, vv = q[a:b].transpose(0, 1), k[a:b].transpose(0, 1), v[a:b].transpose(0, 1)  # (H, n, hd)
        pr = torch.softmax((qq @ kk.transpose(1, 2)) * (hd ** -0.5), dim=-1, dtype=torch.float32)
        out[a:b] = (pr @ vv).transpose(0, 1)
    return _lin(out.reshape(N, E), W, p + "attn.proj")


class Vision:
    def __init__(self, W, cfg):
        self.W, self.cfg = W, cfg
        self.act = act(cfg.v_act)
        self.q25 = cfg.kind == "qwen2_5_vl"

    def norm(self, x, name):
        if self.q25:
            return rms_norm(x, self.W[name + ".weight"], 1e-6)
        return F.layer_norm(x, (x.shape[-1],), self.W[name + ".weight"], self.W[name + ".bias"], 1e-6)

    def mlp(self, x, p):
        W = self.W
        if self.q25:
            return _lin(self.act(_lin(x, W, p + "mlp.gate_proj")) * _lin(x, W, p + "mlp.up_proj"), W, p + "mlp.down_proj")
        return _lin(self.act(_lin(x, W, p + "mlp.fc1")), W, p + "mlp.fc2")

    def forward(self, pixel_values, grid_thw):
        """pixel_values (N, C*tp*p*p) float32, grid_thw (n, 3) int64. Returns dict:
        output (N/merge^2, out) in image-token order; pre_merger (N, E) after the last block in pixel_values row
        order; for Qwen2.5-VL also window_index and cu_window_seqlens (deduplicated)."""
        c, W = self.cfg, self.W
        px = torch.as_tensor(np.asarray(pixel_values, dtype=np.float32))
        grid = torch.as_tensor(np.asarray(grid_thw, dtype=np.int64)).reshape(-1, 3)
        N = px.shape[0]
        if int((grid[:, 0] * grid[:, 1] * grid[:, 2]).sum()) != N:
            raise ValueError("pixel_values rows do not match image_grid_thw")
        pw = W["visual.patch_embed.proj.weight"]  # (E, C, tp, p, p)
        # Conv3d with stride == kernel over one patch per row == px @ pw.reshape(E, -1).T (conv3d kept for its
        # summation order, which is HF's)
        x = F.conv3d(px.view(-1, c.v_in_channels, c.v_temporal_patch_size, c.v_patch_size, c.v_patch_size),
                     pw).view(N, -1)
        hd = c.v_embed // c.v_num_heads
        rot = vision_rotary(grid, hd, c.v_merge)  # (N, hd/2)
        unit = c.v_merge * c.v_merge
        cu_full = [0] + torch.cumsum(torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0]), 0).tolist()
        out = {}
        if self.q25:
            widx, cu_win = get_window_index(grid, c.v_window_size, c.v_merge, c.v_patch_size)
            cu_win = torch.unique_consecutive(torch.tensor(cu_win)).tolist()
            x = x.reshape(N // unit, unit, -1)[widx].reshape(N, -1)
            rot = rot.reshape(N // unit, unit, -1)[widx].reshape(N, -1)
            out["window_index"] = widx.numpy().astype(np.int64)
            out["cu_window_seqlens"] = np.array(cu_win, dtype=np.int64)
        emb = torch.cat((rot, rot), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        for i in range(c.v_depth):
            p = f"visual.blocks.{i}."
            cu = cu_full if (not self.q25 or i in c.v_fullatt) else cu_win
            x = x + _block_attention(self.norm(x, p + "norm1"), W, p, c, cos, sin, cu)
            x = x + self.mlp(self.norm(x, p + "norm2"), p)
        m = self.norm(x, "visual.merger.ln_q").reshape(-1, unit * c.v_embed)
        m = _lin(F.gelu(_lin(m, W, "visual.merger.mlp.0")), W, "visual.merger.mlp.2")
        if self.q25:
            rev = torch.argsort(widx)
            m = m[rev]
            patch_perm = (widx[:, None] * unit + torch.arange(unit)[None, :]).reshape(-1)
            x = x[torch.argsort(patch_perm)]
        out["pre_merger"] = x
        out["output"] = m
        return out


def vision_forward_geometric(vis, pixel_values, grid_thw):
    """A second, structurally different implementation of the vision tower for self-checks: no reordering at all.
    Every patch row keeps its pixel_values position; attention is restricted with a mask built from geometry:
    full-attention blocks: same image frame; Qwen2.5-VL window blocks: same frame and same window
    (merged row // window, merged col // window). Returns (pre_merger, output) in the original order."""
    c, W = vis.cfg, vis.W
    px = torch.as_tensor(np.asarray(pixel_values, dtype=np.float32))
    grid = torch.as_tensor(np.asarray(grid_thw, dtype=np.int64)).reshape(-1, 3)
    m = c.v_merge
    vm = (c.v_window_size // m // c.v_patch_size) if vis.q25 else None
    frame_id, win_id = [], []
    fid = 0
    for t, h, w in grid.tolist():
        for _ in range(t):
            for j in range(h * w):
                b = j // (m * m)  # merge block (raster over the merged grid)
                br, bc = b // (w // m), b % (w // m)
                frame_id.append(fid)
                win_id.append((fid, br // vm, bc // vm) if vm else (fid,))
            fid += 1
    N = px.shape[0]
    same_frame = torch.tensor([[frame_id[i] == frame_id[j] for j in range(N)] for i in range(N)])
    same_win = torch.tensor([[win_id[i] == win_id[j] for j in range(N)] for i in range(N)])
    pw = W["visual.patch_embed.proj.weight"]
    x = px @ pw.reshape(pw.shape[0], -1).t()
    E, H = c.v_embed, c.v_num_heads
    hd = E // H
    rot = vision_rotary(grid, hd, m)
    emb = torch.cat((rot, rot), dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
    for i in range(c.v_depth):
        p = f"visual.blocks.{i}."
        allowed = same_frame if (not vis.q25 or i in c.v_fullatt) else same_win
        a = vis.norm(x, p + "norm1")
        q, k, v = _lin(a, W, p + "attn.qkv").reshape(N, 3, H, hd).unbind(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        sc = torch.einsum("qhd,khd->hqk", q, k) * hd ** -0.5
        sc = sc.masked_fill(~allowed[None], float("-inf"))
        o = torch.einsum("hqk,khd->qhd", torch.softmax(sc, -1), v).reshape(N, E)
        x = x + _lin(o, W, p + "attn.proj")
        x = x + vis.mlp(vis.norm(x, p + "norm2"), p)
    y = vis.norm(x, "visual.merger.ln_q").reshape(-1, m * m * E)
    y = _lin(F.gelu(_lin(y, W, "visual.merger.mlp.0")), W, "visual.merger.mlp.2")
    return x, y


def selftest(dirs, n_random=40, seed=0):
    """Vision tower (window reordering as HF does it) == vision_forward_geometric, on the given case folders
    and on random grids / window sizes with random weights. Returns the max abs difference seen."""
    worst = 0.0
    for d in dirs:
        cfg = load_config(d)
        px, grid = folder_pixels(d)
        if px is None:
            continue
        vis = Vision(load_weights(d)[0], cfg)
        a = vis.forward(px, grid)
        pre, out = vision_forward_geometric(vis, px, grid)
        dd = max(float((a["pre_merger"] - pre).abs().max()), float((a["output"] - out).abs().max()))
        print(f"  {d}: reordered vs geometric max|diff| {dd:.2e}")
        worst = max(worst, dd)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    for it in range(n_random):
        E, H = 16, 2
        vm = int(rng.integers(1, 5))
        cfgd = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "hidden_size": 24, "num_attention_heads": 2,
                "num_key_value_heads": 1, "rope_scaling": {"type": "mrope", "mrope_section": [2, 2, 2]},
                "vision_config": {"depth": 3, "hidden_size": E, "num_heads": H, "intermediate_size": 24,
                                  "out_hidden_size": 24, "window_size": vm * 28,
                                  "fullatt_block_indexes": [int(rng.integers(0, 3))]}}
        cfg = Qwen2VLCfg(cfgd)
        n_img = int(rng.integers(1, 4))
        grid = np.array([[1 if rng.random() < 0.8 else 2, 2 * int(rng.integers(1, 8)), 2 * int(rng.integers(1, 8))]
                         for _ in range(n_img)], dtype=np.int64)
        N = int(grid.prod(1).sum())
        Wr = {"visual.patch_embed.proj.weight": torch.randn(E, 3, 2, 14, 14, generator=g) * 0.03,
              "visual.merger.ln_q.weight": 1 + 0.1 * torch.randn(E, generator=g),
              "visual.merger.mlp.0.weight": torch.randn(4 * E, 4 * E, generator=g) / 8,
              "visual.merger.mlp.0.bias": 0.1 * torch.randn(4 * E, generator=g),
              "visual.merger.mlp.2.weight": torch.randn(24, 4 * E, generator=g) / 8,
              "visual.merger.mlp.2.bias": 0.1 * torch.randn(24, generator=g)}
        for i in range(3):
            p = f"visual.blocks.{i}."
            for nm, shp in (("norm1.weight", (E,)), ("norm2.weight", (E,)), ("attn.qkv.weight", (3 * E, E)),
                            ("attn.qkv.bias", (3 * E,)), ("attn.proj.weight", (E, E)), ("attn.proj.bias", (E,)),
                            ("mlp.gate_proj.weight", (24, E)), ("mlp.gate_proj.bias", (24,)),
                            ("mlp.up_proj.weight", (24, E)), ("mlp.up_proj.bias", (24,)),
                            ("mlp.down_proj.weight", (E, 24)), ("mlp.down_proj.bias", (E,))):
                Wr[p + nm] = (1 + 0.1 * torch.randn(*shp, generator=g)) if "norm" in nm else \
                    torch.randn(*shp, generator=g) / (shp[-1] ** 0.5)
        vis = Vision(Wr, cfg)
        px = torch.randn(N, 3 * 2 * 14 * 14, generator=g).numpy()
        a = vis.forward(px, grid)
        pre, out = vision_forward_geometric(vis, px, grid)
        dd = max(float((a["pre_merger"] - pre).abs().max()), float((a["output"] - out).abs().max()))
        worst = max(worst, dd)
    print(f"  {n_random} random grids / window sizes: worst max|diff| {worst:.2e}")
    return worst


# ----------------------------------------------------------------------------------------------------------------
# M-RoPE positions
# ----------------------------------------------------------------------------------------------------------------
def get_rope_index(ids, grid_thw, cfg):
    """Qwen2VLModel.get_rope_index for one unpadded sequence. ids: list of ints; grid_thw (n,3) or None.
    Returns (positions (3, S) int64, mrope_position_delta int)."""
    S = len(ids)
    if grid_thw is None or len(grid_thw) == 0:
        return np.tile(np.arange(S, dtype=np.int64), (3, 1)), 0
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m = cfg.v_merge
    img = cfg.image_token_id
    starts = [i for i, t in enumerate(ids) if t == cfg.vision_start_token_id]
    # HF indexes input_ids[vision_start + 1]; a trailing vision_start would raise there
    n_images = sum(1 for i in starts if i + 1 < S and ids[i + 1] == img)
    parts, st, image_index = [], 0, 0
    for _ in range(n_images):
        ed = ids.index(img, st)
        t, h, w = [int(v) for v in grid[image_index]]
        image_index += 1
        lt, lh, lw = t, h // m, w // m
        st_idx = int(parts[-1].max()) + 1 if parts else 0
        text_len = ed - st
        parts.append(np.tile(np.arange(text_len, dtype=np.int64), (3, 1)) + st_idx)
        # images: t index 0 (Qwen2-VL: arange(t) with t = 1; Qwen2.5-VL: arange(t) * second_per_grid_t(=0) * tps)
        ti = np.repeat(np.arange(lt) * (1 if cfg.kind == "qwen2_vl" else 0), lh * lw)
        hi = np.tile(np.repeat(np.arange(lh), lw), lt)
        wi = np.tile(np.arange(lw), lt * lh)
        parts.append(np.stack([ti, hi, wi]).astype(np.int64) + text_len + st_idx)
        st = ed + lt * lh * lw
    if st < S:
        st_idx = int(parts[-1].max()) + 1 if parts else 0
        parts.append(np.tile(np.arange(S - st, dtype=np.int64), (3, 1)) + st_idx)
    pos = np.concatenate(parts, axis=1)
    if pos.shape[1] != S:
        raise ValueError(f"get_rope_index produced {pos.shape[1]} positions for {S} tokens (image tokens do not "
                         "match image_grid_thw)")
    return pos, int(pos.max()) + 1 - S


# ----------------------------------------------------------------------------------------------------------------
# Qwen2 decoder with M-RoPE
# ----------------------------------------------------------------------------------------------------------------
class Qwen2Text:
    def __init__(self, W, cfg):
        self.W, self.cfg = W, cfg
        self.embed_w = W["model.embed_tokens.weight"]
        if cfg.tie_word_embeddings:
            self.head_w = self.embed_w
        else:
            if "lm_head.weight" not in W:
                raise ValueError("lm_head.weight missing and tie_word_embeddings is false")
            self.head_w = W["lm_head.weight"]
        hd = cfg.head_dim
        self.inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        self.act = act(cfg.hidden_act)

    def embed(self, ids):
        ids = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.cfg.vocab_size):
            raise ValueError("token id out of range")
        return self.embed_w[ids]

    def rope(self, pos3):
        """pos3 (3, T) int -> cos, sin (T, head_dim) with the M-RoPE section selection."""
        pos3 = torch.as_tensor(np.asarray(pos3), dtype=torch.int64)
        freqs = pos3[:, :, None].float() * self.inv_freq[None, None, :]  # (3, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        sec = self.cfg.mrope_section * 2
        cs = [ch[i % 3] for i, ch in enumerate(cos.split(sec, dim=-1))]
        ss = [ch[i % 3] for i, ch in enumerate(sin.split(sec, dim=-1))]
        return torch.cat(cs, dim=-1), torch.cat(ss, dim=-1)

    def new_cache(self):
        return [[None, None] for _ in range(self.cfg.num_hidden_layers)]

    def forward(self, x, pos3, cache=None):
        """x (T, D) embeddings with 3-D positions pos3 (3, T). Returns logits (T, V)."""
        c, W = self.cfg, self.W
        T = x.shape[0]
        H, Hkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        cos, sin = self.rope(pos3)
        h = x
        for il in range(c.num_hidden_layers):
            p = f"model.layers.{il}."
            res = h
            a = rms_norm(h, W[p + "input_layernorm.weight"], c.rms_norm_eps)
            q = _lin(a, W, p + "self_attn.q_proj").view(T, H, hd).transpose(0, 1)
            k = _lin(a, W, p + "self_attn.k_proj").view(T, Hkv, hd).transpose(0, 1)
            v = _lin(a, W, p + "self_attn.v_proj").view(T, Hkv, hd).transpose(0, 1)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            if cache is not None:
                if cache[il][0] is not None:
                    k = torch.cat((cache[il][0], k), dim=1)
                    v = torch.cat((cache[il][1], v), dim=1)
                cache[il][0], cache[il][1] = k, v
            Tk = k.shape[1]
            kk = k.repeat_interleave(H // Hkv, dim=0)
            vv = v.repeat_interleave(H // Hkv, dim=0)
            sc = (q @ kk.transpose(1, 2)) * (hd ** -0.5)
            qpos = torch.arange(Tk - T, Tk)[:, None]
            kpos = torch.arange(Tk)[None, :]
            sc = sc.masked_fill(kpos > qpos, float("-inf"))
            win = layer_window(c, il)
            if win is not None:
                sc = sc.masked_fill(kpos <= qpos - win, float("-inf"))
            pr = torch.softmax(sc, dim=-1, dtype=torch.float32)
            o = (pr @ vv).transpose(0, 1).reshape(T, H * hd)
            h = res + _lin(o, W, p + "self_attn.o_proj", bias=False)
            res = h
            m = rms_norm(h, W[p + "post_attention_layernorm.weight"], c.rms_norm_eps)
            g = self.act(_lin(m, W, p + "mlp.gate_proj", False)) * _lin(m, W, p + "mlp.up_proj", False)
            h = res + _lin(g, W, p + "mlp.down_proj", False)
        h = rms_norm(h, W["model.norm.weight"], c.rms_norm_eps)
        return h @ self.head_w.t()


class Qwen2VL:
    def __init__(self, W, cfg):
        self.W, self.cfg = W, cfg
        self.vision = Vision(W, cfg)
        self.lm = Qwen2Text(W, cfg)

    def embed_prompt(self, ids, image_rows):
        ids_t = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        x = self.lm.embed(ids_t).clone()
        mask = ids_t == self.cfg.image_token_id
        n = int(mask.sum())
        nf = 0 if image_rows is None else image_rows.shape[0]
        if n != nf:
            raise ValueError(f"Image features and image tokens do not match: tokens: {n}, features {nf}")
        if n:
            x[mask] = image_rows
        return x

    def run(self, ids, pixel_values=None, grid_thw=None, n_new=8, check_recompute=True):
        """Full pipeline. Returns dict of numpy outputs + margins."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        out = {}
        rows = None
        if pixel_values is not None and grid_thw is not None and len(grid_thw):
            vo = self.vision.forward(pixel_values, grid_thw)
            rows = vo["output"]
            out["vision_pre_merger"] = vo["pre_merger"].numpy()
            out["vision_output"] = rows.numpy()
            for k in ("window_index", "cu_window_seqlens"):
                if k in vo:
                    out["vision_" + k] = vo[k]
        else:
            grid_thw = None
        emb = self.embed_prompt(ids, rows)
        pos, delta = get_rope_index(ids, grid_thw, self.cfg)
        out["mrope_position_ids"] = pos[:, None, :]
        out["_rope_delta"] = delta
        lm = self.lm
        full = lm.forward(emb, pos)
        out["logits"] = full[None].numpy()
        S = len(ids)
        # greedy with a KV cache; a token fed at step k sits at position S + k + delta in all three streams
        cache = lm.new_cache()
        last = lm.forward(emb, pos, cache)
        if not torch.allclose(last, full, atol=1e-6, rtol=0):
            raise RuntimeError("cached and uncached prompt logits differ")
        last = last[-1]
        gen, margins = [], []
        for k in range(n_new):
            top2 = torch.topk(last, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            tok = int(top2.indices[0])
            gen.append(tok)
            if check_recompute and k > 0:
                g = gen[:-1]
                e2 = torch.cat((emb, lm.embed(g)), 0)
                p2 = np.concatenate((pos, np.tile(np.arange(S, S + len(g)) + delta, (3, 1))), axis=1)
                if int(torch.argmax(lm.forward(e2, p2)[-1])) != tok:
                    raise RuntimeError(f"KV cache and full recomputation disagree at step {k}")
            p1 = np.full((3, 1), S + k + delta, dtype=np.int64)
            last = lm.forward(lm.embed([tok]), p1, cache)[-1]
        out["generated_ids"] = np.array([gen], dtype=np.int64)
        out["_gen_margins"] = margins
        out["_prompt_margins"] = top_margins(full).numpy()
        return out


# ----------------------------------------------------------------------------------------------------------------
# folders
# ----------------------------------------------------------------------------------------------------------------
def _npy(folder, name):
    path = os.path.join(folder, name)
    return np.load(path) if os.path.exists(path) else None


def _json(folder, name):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def folder_images(folder):
    """Image file names of a case folder, in prompt order (meta.json processor_check.photos or images)."""
    meta = _json(folder, "meta.json") or {}
    pc = meta.get("processor_check") or {}
    return pc.get("photos") or pc.get("images") or meta.get("images") or []


def run_processor(folder):
    from PIL import Image
    names = folder_images(folder)
    if not names:
        return None
    proc = ImageProcessor(_json(folder, "preprocessor_config.json") or {})
    imgs = []
    for n in names:
        with Image.open(os.path.join(folder, n)) as im:
            im.load()
            imgs.append(im.copy())
    return proc(imgs)


def folder_pixels(folder):
    """(pixel_values, image_grid_thw) of a case folder: the saved pixel_values.npy, or, where a folder does not
    store it (the large cases), our processor on the folder's images (with the grid the processor gives)."""
    px = _npy(folder, "pixel_values.npy")
    grid = _npy(folder, "image_grid_thw.npy")
    if px is None and folder_images(folder):
        pr = run_processor(folder)
        px, grid = pr["pixel_values"], pr["image_grid_thw"]
    return px, grid


def run_folder(folder, n_new=8, check_recompute=True):
    cfg = load_config(folder)
    W, _ = load_weights(folder)
    model = Qwen2VL(W, cfg)
    ids = _npy(folder, "input_ids.npy")
    px, grid = folder_pixels(folder)
    return cfg, model.run(ids, px, grid, n_new=n_new, check_recompute=check_recompute)


TOLS = {"pixel_values": 1e-6, "vision_pre_merger": 1e-5, "vision_output": 1e-5, "logits": 2e-5}


def _compare(name, mine, ref, ok, tol_key=None):
    if ref.shape != mine.shape:
        print(f"  {name:28s} shape {mine.shape} != reference {ref.shape}  FAIL")
        return False, None
    if ref.dtype.kind in "iub":
        same = bool((ref == mine).all())
        print(f"  {name:28s} {'exact match' if same else 'MISMATCH'}"
              + ("" if same or ref.size > 64 else f"  mine={mine.tolist()} ref={ref.tolist()}"))
        if not same and ref.dtype == np.uint8:
            print(f"      max |diff| {int(np.abs(ref.astype(int) - mine.astype(int)).max())} levels")
        return same, 0.0 if same else None
    d = float(np.abs(ref.astype(np.float64) - mine.astype(np.float64)).max()) if ref.size else 0.0
    bound = TOLS.get(tol_key or name, 1e-5)
    print(f"  {name:28s} max|diff| = {d:.3e}  (<= {bound:g}: {'ok' if d <= bound else 'FAIL'})")
    return d <= bound, d


def check_folder(folder):
    ok = True
    diffs = {}
    print(folder)
    pr = run_processor(folder)
    if pr is not None:
        for i, u8 in enumerate(pr["resized_u8"]):
            ref = _npy(folder, f"image{i}_resized_u8.npy")
            if ref is not None:
                r, d = _compare(f"image{i}_resized_u8", u8, ref, ok)
                ok &= r
        for name in ("pixel_values", "image_grid_thw"):
            ref = _npy(folder, name + ".npy")
            if ref is not None:
                r, d = _compare(name + " (processor)", pr[name], ref, ok, tol_key=name)
                ok &= r
                diffs[name] = d
        # no pixel_values.npy: meta.json "pixel_values" holds the shape and sha256 of the float32 bytes
        pm = (_json(folder, "meta.json") or {}).get("pixel_values")
        if _npy(folder, "pixel_values.npy") is None and pm:
            import hashlib
            pv = np.ascontiguousarray(pr["pixel_values"], dtype="<f4")
            same = list(pv.shape) == pm["shape"] and \
                hashlib.sha256(pv.tobytes()).hexdigest() == pm["sha256_of_float32_le_bytes"]
            print(f"  {'pixel_values (sha256)':28s} {'exact match' if same else 'MISMATCH'}")
            ok &= same
    gen_ref = _npy(folder, "generated_ids.npy")
    n_new = gen_ref.shape[-1] if gen_ref is not None else 8
    cfg, out = run_folder(folder, n_new)
    for name in ("vision_pre_merger", "vision_output", "vision_window_index", "vision_cu_window_seqlens",
                 "mrope_position_ids", "logits", "generated_ids"):
        ref = _npy(folder, name + ".npy")
        if ref is None or name not in out:
            continue
        r, d = _compare(name, out[name], ref, ok)
        ok &= r
        diffs[name] = d
    print(f"  rope delta {out['_rope_delta']}, min greedy margin {min(out['_gen_margins']):.4f}")
    return ok, diffs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the reference files in each folder")
    c.add_argument("dirs", nargs="+")
    r = sub.add_parser("run", help="run a folder's inputs and print / write the outputs")
    r.add_argument("dir")
    r.add_argument("--out")
    r.add_argument("--new-tokens", type=int, default=8)
    st = sub.add_parser("selftest", help="window reordering vs a mask-only implementation of the vision tower")
    st.add_argument("dirs", nargs="*")
    s = sub.add_parser("smart_resize")
    s.add_argument("height", type=int)
    s.add_argument("width", type=int)
    s.add_argument("--min-pixels", type=int, default=56 * 56)
    s.add_argument("--max-pixels", type=int, default=28 * 28 * 1280)
    s.add_argument("--factor", type=int, default=28)
    a = ap.parse_args(argv)
    if a.cmd == "check":
        ok = all([check_folder(d)[0] for d in a.dirs])
        print("ALL OK" if ok else "SOME FAILED")
        return 0 if ok else 1
    if a.cmd == "selftest":
        worst = selftest(a.dirs)
        print("SELFTEST OK" if worst < 1e-4 else "SELFTEST FAILED")
        return 0 if worst < 1e-4 else 1
    if a.cmd == "smart_resize":
        print(smart_resize(a.height, a.width, a.factor, a.min_pixels, a.max_pixels))
        return 0
    cfg, out = run_folder(a.dir, a.new_tokens)
    for name, v in sorted(out.items()):
        if not name.startswith("_"):
            print(f"{name}: shape {v.shape} dtype {v.dtype}")
    print("generated_ids:", out["generated_ids"].tolist(), "rope delta", out["_rope_delta"])
    print(f"min greedy margin {min(out['_gen_margins']):.4f}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for name, v in out.items():
            if not name.startswith("_"):
                np.save(os.path.join(a.out, name + ".npy"), v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
