#!/usr/bin/python3
"""Golden cases for Qwen2-VL / Qwen2.5-VL: writes tests/data/qwen2_vl/<case>/ and tests/data/qwen2_vl/smart_resize.json.

Regenerate (Debian's python3 with torch 1.13, numpy, Pillow 9.4; no transformers needed; a few seconds on CPU):

    /usr/bin/python3 scripts/ref_qwen2_vl.py check ../shared/refcases/qwen2_vl_s   # reference == transformers 4.47
    /usr/bin/python3 scripts/gen_qwen2_vl_cases.py [--out tests/data/qwen2_vl]
    /usr/bin/python3 scripts/ref_qwen2_vl.py check tests/data/qwen2_vl/*/            # re-verify every folder
    /usr/bin/python3 scripts/ref_qwen2_vl.py selftest tests/data/qwen2_vl/*/         # window reorder == mask-only tower

Everything is seeded, so a rerun rewrites the same bytes (same torch / numpy / Pillow versions). The outputs come
from scripts/ref_qwen2_vl.py, an independent plain-torch port of the transformers modelling code that reproduces
the shared transformers-made case ../shared/refcases/qwen2_vl_s (pixel_values bit-exact, logits within 2e-5).

Each case folder holds: config.json (hub layout), model.safetensors (F32, hub tensor names), preprocessor_config.json
(Qwen2VLImageProcessor), the input images (image<i>.png, in prompt order) and
  input_ids.npy int64 [1,S]; pixel_values.npy float32 (patches, 3*2*14*14) = our processor on the PNGs (not
  written for the cases with "pixel_values_file": False, the large ones: meta.json "pixel_values" then holds its
  shape and the sha256 of its float32 bytes, and ref_qwen2_vl.py check recomputes it from the PNGs);
  image_grid_thw.npy int64 (n,3);
  mrope_position_ids.npy int64 [3,1,S]; vision_pre_merger.npy float32 (patches, embed) after the last vision block,
  rows in pixel_values order (for Qwen2.5-VL: after undoing the window reordering); vision_output.npy float32
  (image tokens, text hidden) = the rows spliced at the image tokens, in order; Qwen2.5-VL also
  vision_window_index.npy int64 and vision_cu_window_seqlens.npy int64 (see meta.json notes);
  logits.npy float32 [1,S,320] (all prompt positions, one forward); generated_ids.npy int64 [1,8] (greedy, KV
  cache, no EOS stop); meta.json (what the case varies, shapes, branches, margins, sha256 of every file).
Text-only cases have no images, pixel_values, grid or vision outputs. tests/data/qwen2_vl/smart_resize.json lists
smart_resize(height, width, factor, min_pixels, max_pixels) results (or "error": true) for edge inputs: round() ties,
both branches, the exact boundaries, aspect ratio 200, sizes below the factor, float-order traps, 0-size results.
To change a case, edit CASES below; the text ids are re-drawn (seeded) until every greedy step has a top1-top2
margin >= 0.1 (at least 0.05), the 8 generated ids are < 300 and hold >= 4 distinct values (a case's
"min_distinct"). Keep the folders together under 4.5 MB (currently about 4.0 MB), each under 1 MB (the two large
cases under 600 KB). Regenerate single cases with --only NAME ... (smart_resize.json is rewritten each time, with
the same bytes).
"""
import argparse
import hashlib
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_qwen2_vl as R  # noqa: E402

VOCAB = 320
VSTART, VEND, IMG, VID = 314, 315, 316, 317
MIN_MARGIN = 0.05
WANT_MARGIN = 0.1
N_NEW = 8


# ----------------------------------------------------------------------------------------------------------------
# configs in the hub layout
# ----------------------------------------------------------------------------------------------------------------
def text_fields(t):
    return {
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "vision_start_token_id": VSTART,
        "vision_end_token_id": VEND,
        "image_token_id": IMG,
        "video_token_id": VID,
        "hidden_act": "silu",
        "hidden_size": t["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": t["inter"],
        "max_position_embeddings": 4096,
        "max_window_layers": t.get("max_window_layers", t["layers"]),
        "num_attention_heads": t["heads"],
        "num_hidden_layers": t["layers"],
        "num_key_value_heads": t["kv"],
        "rms_norm_eps": t["eps"],
        "rope_theta": t["theta"],
        "sliding_window": t.get("sliding_window", 4096),
        "tie_word_embeddings": t["tied"],
        "torch_dtype": "float32",
        "transformers_version": "4.47.1",
        "use_cache": True,
        "use_sliding_window": t.get("use_sliding_window", False),
        "rope_scaling": {"type": "mrope", "mrope_section": list(t["mrope"])},
        "vocab_size": VOCAB,
    }


def qwen2vl_config(t, v):
    d = {"architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl"}
    d.update(text_fields(t))
    d["vision_config"] = {
        "depth": v["depth"], "embed_dim": v["embed"], "mlp_ratio": v["mlp_ratio"], "num_heads": v["heads"],
        "in_chans": 3, "hidden_size": t["hidden"], "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "temporal_patch_size": 2, "hidden_act": "quick_gelu",
    }
    return dict(sorted(d.items()))


def qwen25vl_config(t, v):
    d = {"architectures": ["Qwen2_5_VLForConditionalGeneration"], "model_type": "qwen2_5_vl"}
    d.update(text_fields(t))
    d["transformers_version"] = "4.49.0"
    d["vision_config"] = {
        "depth": v["depth"], "hidden_act": "silu", "hidden_size": v["embed"], "intermediate_size": v["inter"],
        "num_heads": v["heads"], "in_chans": 3, "out_hidden_size": t["hidden"], "patch_size": 14,
        "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": v["window"],
        "fullatt_block_indexes": list(v["fullatt"]), "tokens_per_second": 2, "temporal_patch_size": 2,
    }
    return dict(sorted(d.items()))


# ----------------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------------
def make_weights(cfg, seed):
    """Seeded random F32 weights with hub names; scales chosen so every part matters and logits have std ~1-3.
    With tied embeddings the residual stream would otherwise stay close to the input embedding, so the model would
    just repeat its last token; there the MLP outputs (a per-token map) are scaled up (res_gain)."""
    g = torch.Generator().manual_seed(seed)

    def n(*shape, std=1.0, mean=0.0):
        return (torch.randn(*shape, generator=g) * std + mean).float()

    W = {}
    E, Hd = cfg.v_embed, cfg.v_mlp_hidden
    D, I = cfg.hidden_size, cfg.intermediate_size
    hd, Hq, Hkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    q25 = cfg.kind == "qwen2_5_vl"
    res_gain = 4.0 if cfg.tie_word_embeddings else 1.0
    pdim = 3 * 2 * 14 * 14
    W["visual.patch_embed.proj.weight"] = n(E, 3, 2, 14, 14, std=1.2 / pdim ** 0.5)
    for i in range(cfg.v_depth):
        p = f"visual.blocks.{i}."
        for nm in ("norm1", "norm2"):
            W[p + nm + ".weight"] = n(E, std=0.1, mean=1.0)
            if not q25:
                W[p + nm + ".bias"] = n(E, std=0.05)
        W[p + "attn.qkv.weight"] = n(3 * E, E, std=1.0 / E ** 0.5)
        W[p + "attn.qkv.bias"] = n(3 * E, std=0.1)
        W[p + "attn.proj.weight"] = n(E, E, std=0.6 / E ** 0.5)
        W[p + "attn.proj.bias"] = n(E, std=0.05)
        if q25:
            W[p + "mlp.gate_proj.weight"] = n(Hd, E, std=1.0 / E ** 0.5)
            W[p + "mlp.gate_proj.bias"] = n(Hd, std=0.1)
            W[p + "mlp.up_proj.weight"] = n(Hd, E, std=1.0 / E ** 0.5)
            W[p + "mlp.up_proj.bias"] = n(Hd, std=0.1)
            W[p + "mlp.down_proj.weight"] = n(E, Hd, std=0.8 / Hd ** 0.5)
            W[p + "mlp.down_proj.bias"] = n(E, std=0.05)
        else:
            W[p + "mlp.fc1.weight"] = n(Hd, E, std=1.0 / E ** 0.5)
            W[p + "mlp.fc1.bias"] = n(Hd, std=0.1)
            W[p + "mlp.fc2.weight"] = n(E, Hd, std=0.6 / Hd ** 0.5)
            W[p + "mlp.fc2.bias"] = n(E, std=0.05)
    M = 4 * E
    W["visual.merger.ln_q.weight"] = n(E, std=0.1, mean=1.0)
    if not q25:
        W["visual.merger.ln_q.bias"] = n(E, std=0.05)
    W["visual.merger.mlp.0.weight"] = n(M, M, std=1.0 / M ** 0.5)
    W["visual.merger.mlp.0.bias"] = n(M, std=0.1)
    W["visual.merger.mlp.2.weight"] = n(D, M, std=0.8 / M ** 0.5)
    W["visual.merger.mlp.2.bias"] = n(D, std=0.05)
    W["model.embed_tokens.weight"] = n(VOCAB, D, std=0.35)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        W[p + "input_layernorm.weight"] = n(D, std=0.1, mean=1.0)
        W[p + "post_attention_layernorm.weight"] = n(D, std=0.1, mean=1.0)
        W[p + "self_attn.q_proj.weight"] = n(Hq * hd, D, std=1.0 / D ** 0.5)
        W[p + "self_attn.q_proj.bias"] = n(Hq * hd, std=0.2)
        W[p + "self_attn.k_proj.weight"] = n(Hkv * hd, D, std=1.0 / D ** 0.5)
        W[p + "self_attn.k_proj.bias"] = n(Hkv * hd, std=0.2)
        W[p + "self_attn.v_proj.weight"] = n(Hkv * hd, D, std=1.0 / D ** 0.5)
        W[p + "self_attn.v_proj.bias"] = n(Hkv * hd, std=0.1)
        W[p + "self_attn.o_proj.weight"] = n(D, Hq * hd, std=0.8 / (Hq * hd) ** 0.5)
        W[p + "mlp.gate_proj.weight"] = n(I, D, std=1.0 / D ** 0.5)
        W[p + "mlp.up_proj.weight"] = n(I, D, std=1.0 / D ** 0.5)
        W[p + "mlp.down_proj.weight"] = n(D, I, std=0.8 * res_gain / I ** 0.5)
    W["model.norm.weight"] = n(D, std=0.1, mean=1.0)
    if not cfg.tie_word_embeddings:
        W["lm_head.weight"] = n(VOCAB, D, std=0.35)
    return W


# ----------------------------------------------------------------------------------------------------------------
# synthetic images
# ----------------------------------------------------------------------------------------------------------------
def make_image(h, w, seed, mode="RGB", quant=1):
    """Smooth but varied seeded image: colour gradients, a few Gaussian blobs, a low-frequency ripple and a
    sharp-edged rectangle (so resampling has edges to get right). No noise, to keep the PNGs small. quant > 1
    posterizes (each channel value v -> v // quant * quant: bands with sharp steps), which makes large PNGs
    several times smaller."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = y / max(h - 1, 1), x / max(w - 1, 1)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, c0 = rng.uniform(-120, 120, 3)
        img[..., c] = 128 + a * (xx - 0.5) + b * (yy - 0.5) + c0 * 0.3
    for _ in range(4):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(0.08, 0.3) * max(h, w)
        amp = rng.uniform(-90, 90, 3)
        img += amp * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))[..., None]
    f = rng.uniform(1.5, 4, 2)
    img += (18 * np.sin(2 * np.pi * (f[0] * yy + f[1] * xx)))[..., None] * rng.uniform(-1, 1, 3)
    y0, x0 = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[y0:y0 + h // 3, x0:x0 + w // 3] += rng.uniform(-60, 60, 3)
    u8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if quant > 1:
        u8 = (u8 // quant * quant).astype(np.uint8)
    from PIL import Image
    im = Image.fromarray(u8, "RGB")
    if mode == "L":
        im = im.convert("L")
    elif mode == "RGBA":
        alpha = np.clip(np.rint(255 * (0.2 + 0.8 * xx)), 0, 255).astype(np.uint8)
        im = Image.fromarray(np.dstack([u8, alpha]), "RGBA")
    return im


# ----------------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------------
CASES = [
    {
        "name": "qwen2vl_gqa2_mrope233",
        "what": "Qwen2-VL: two images of different sizes, 50x90 -> 56x84 (merged grid 2x3) and 60x63 -> 56x56 "
                "(merged grid 2x2), both the round branch, with text before, between and after; GQA 4 query / 2 kv heads x 16; mrope_section [2,3,3]; untied lm_head; "
                "rope_theta 1e6; vision embed 32, 2 heads, depth 2, mlp_ratio 4, quick_gelu.",
        "kind": "qwen2_vl",
        "text": dict(hidden=64, inter=32, layers=2, heads=4, kv=2, eps=1e-6, theta=1000000.0, tied=False,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=2, embed=32, heads=2, mlp_ratio=4),
        "proc": dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280),
        "images": [dict(h=50, w=90, mode="RGB"), dict(h=60, w=63, mode="RGB")],
        "text_runs": [3, 2, 5],
        "seed": 101,
    },
    {
        "name": "qwen2vl_three_images_tied",
        "what": "Qwen2-VL: three images: a grayscale (mode L) 33x39 PNG resized to the minimum 28x28 (1 merged "
                "token), a 40x200 image taken to 28x140 by the max_pixels branch (merged grid 1x5), and a 42x30 "
                "image whose height is a round() tie (1.5 -> 2: 56x28); tie_word_embeddings (no lm_head.weight); "
                "2 query heads x 24 with 1 kv head; mrope_section [4,4,4]; rope_theta 10000; vision embed 8, "
                "2 heads x 4 (2-D rotary with a single frequency, 1.0, per axis), depth 2, mlp_ratio 2. (The min_pixels branch cannot occur in the same processor "
                "call as a 28x28 result: it always yields both sides >= 56; qwen25vl_two_images takes it.)",
        "kind": "qwen2_vl",
        "text": dict(hidden=48, inter=48, layers=2, heads=2, kv=1, eps=1e-6, theta=10000.0, tied=True,
                     mrope=[4, 4, 4]),
        "vision": dict(depth=2, embed=8, heads=2, mlp_ratio=2),
        "proc": dict(min_pixels=28 * 28, max_pixels=4000),
        "images": [dict(h=33, w=39, mode="L"), dict(h=40, w=200, mode="RGB"), dict(h=42, w=30, mode="RGB")],
        "text_runs": [2, 3, 1, 4],
        "seed": 202,
    },
    {
        "name": "qwen2vl_text_only",
        "what": "Qwen2-VL checkpoint run on a text-only prompt (no vision tokens, no pixel_values): positions are "
                "0..S-1 in all three M-RoPE streams, decode positions S+k. The (tiny) vision weights are present "
                "but unused. Tied embeddings; text hidden 16, 1 head x 16.",
        "kind": "qwen2_vl",
        "text": dict(hidden=16, inter=32, layers=2, heads=1, kv=1, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=1, embed=8, heads=2, mlp_ratio=2),
        "proc": dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280),
        "images": [],
        "text_runs": [14],
        "seed": 303,
    },
    {
        "name": "qwen2vl_sliding_window",
        "what": "Qwen2-VL with the decoder's sliding window on: use_sliding_window, sliding_window 6, "
                "max_window_layers 1 of 2 (layer 0 full attention, layer 1 windowed), a 28x56 image (2 merged "
                "tokens) inside a prompt of ~20 tokens, so prompt and decode steps reach past the window. Text hidden "
                "32, 2 heads / 1 kv head; vision embed 8, depth 1.",
        "kind": "qwen2_vl",
        "text": dict(hidden=32, inter=48, layers=2, heads=2, kv=1, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3], use_sliding_window=True, sliding_window=6, max_window_layers=1),
        "vision": dict(depth=1, embed=8, heads=2, mlp_ratio=2),
        "proc": dict(min_pixels=28 * 28, max_pixels=28 * 56),
        "images": [dict(h=28, w=56, mode="RGB")],
        "text_runs": [6, 10],
        "seed": 909,
    },
    {
        "name": "qwen25vl_window",
        "what": "Qwen2.5-VL: one 108x180 image taken to 84x140 by the max_pixels branch: 6x10 patches, merged grid "
                "3x5; window_size 56 -> windows of 2x2 merged tokens, padded (3x5 -> 4x6): 2 x 3 windows holding "
                "4,4,2,2,2,1 merged tokens; vision hidden 32, 2 heads, intermediate 48, depth 3 with "
                "fullatt_block_indexes [1] (blocks 0 and 2 use the windows); RMSNorm blocks, SwiGLU vision MLP "
                "with biases, RMSNorm merger; text 64 hidden, 4 heads x 16, 1 kv head, mrope [2,3,3], tied.",
        "kind": "qwen2_5_vl",
        "text": dict(hidden=64, inter=32, layers=2, heads=4, kv=1, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=3, embed=32, heads=2, inter=48, window=56, fullatt=[1]),
        "proc": dict(min_pixels=56 * 56, max_pixels=84 * 140),
        "images": [dict(h=108, w=180, mode="RGB")],
        "text_runs": [4, 5],
        "seed": 404,
    },
    {
        "name": "qwen25vl_two_images",
        "what": "Qwen2.5-VL: two images, window_size 112 (4x4 merged tokens). Image 0: 30x135 -> 28x140 (round "
                "branch), merged grid 1x5 -> padded to 4x8: windows of 4 and 1 merged tokens. Image 1: an RGBA "
                "58x30 PNG (alpha dropped) taken up to 112x56 by the min_pixels branch, merged grid 4x2: 4 % 4 == 0 "
                "so HF pads a whole empty window row, whose duplicate cu_window_seqlens entry unique_consecutive "
                "removes. Vision hidden 16, 2 heads x 8, intermediate 32, depth 4 with fullatt_block_indexes "
                "[0, 3]; tied embeddings; text 32 hidden, 2 heads x 16 with 2 kv heads (no GQA), mrope [2,3,3].",
        "kind": "qwen2_5_vl",
        "text": dict(hidden=32, inter=48, layers=2, heads=2, kv=2, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=4, embed=16, heads=2, inter=32, window=112, fullatt=[0, 3]),
        "proc": dict(min_pixels=3900, max_pixels=28 * 28 * 1280),
        "images": [dict(h=30, w=135, mode="RGB"), dict(h=58, w=30, mode="RGBA")],
        "text_runs": [2, 3, 4],
        "seed": 505,
    },
    # The two large cases below do not write pixel_values.npy (it would be MBs): a test runs its own processor on
    # image0.png; meta.json "pixel_values" gives the shape and sha256 of the processor's output to compare with.
    {
        "name": "qwen2vl_large_nonsquare",
        "what": "Qwen2-VL: one large wide image, 250x590 (h x w) -> 252x588 by the round branch (max_pixels "
                "1003520 is far away): 18x42 patches (756), merged grid 9x21 (189 image tokens), text before and "
                "after; the PNG is posterized (channel steps of 8) to keep it small; no pixel_values.npy (the test "
                "runs its processor on image0.png; meta.json pixel_values has the shape and sha256). Vision embed "
                "16, 2 heads x 8, depth 2, mlp_ratio 2; text 32 hidden, 2 heads x 16, 1 kv head, mrope [2,3,3], "
                "tied embeddings (an untied lm_head would not fit the 600 KB folder budget).",
        "kind": "qwen2_vl",
        "text": dict(hidden=32, inter=16, layers=2, heads=2, kv=1, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=2, embed=16, heads=2, mlp_ratio=2),
        "proc": dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280),
        "images": [dict(h=250, w=590, mode="RGB", quant=8)],
        "text_runs": [3, 4],
        "seed": 616,
        "min_distinct": 6,
        "pixel_values_file": False,
    },
    {
        "name": "qwen25vl_large_nonsquare",
        "what": "Qwen2.5-VL: one tall image, 540x250 (h x w) -> 532x252 by the round branch: 38x18 patches (684), "
                "merged grid 19x9 (171 image tokens); window_size 112 -> windows of 4x4 merged tokens, padded "
                "19x9 -> 20x12: 5 x 3 windows, the last window row 3 tokens tall and the last window column 1 "
                "token wide (cut by both edges; the corner window holds 3x1 merged tokens); vision hidden 16, 2 heads "
                "x 8, intermediate 32, depth 3 with fullatt_block_indexes [1] (blocks 0 and 2 use the windows); "
                "text 32 hidden, 2 heads x 16, 1 kv head, mrope [2,3,3], tied; text before and after; posterized "
                "PNG; no pixel_values.npy (see qwen2vl_large_nonsquare).",
        "kind": "qwen2_5_vl",
        "text": dict(hidden=32, inter=16, layers=2, heads=2, kv=1, eps=1e-6, theta=1000000.0, tied=True,
                     mrope=[2, 3, 3]),
        "vision": dict(depth=3, embed=16, heads=2, inter=32, window=112, fullatt=[1]),
        "proc": dict(min_pixels=56 * 56, max_pixels=28 * 28 * 1280),
        "images": [dict(h=540, w=250, mode="RGB", quant=8)],
        "text_runs": [3, 4],
        "seed": 737,
        "min_distinct": 6,
        "pixel_values_file": False,
    },
]


def smart_branch(h, w, factor, mn, mx):
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    return "max_pixels" if hb * wb > mx else ("min_pixels" if hb * wb < mn else "round")


def build_prompt(rng, text_runs, tokens_per_image):
    """text run 0, image 0, text run 1, image 1, ..., text run n (runs after the last image optional)."""
    ids, layout = [], []
    for i, n in enumerate(text_runs):
        if n:
            ids += [int(t) for t in rng.integers(3, 300, n)]
            layout.append(f"{n} text")
        if i < len(tokens_per_image):
            k = tokens_per_image[i]
            ids += [VSTART] + [IMG] * k + [VEND]
            layout.append(f"{VSTART}, {k} x {IMG}, {VEND}")
    return ids, layout


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_case(spec, root):
    name = spec["name"]
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    t, v = spec["text"], spec["vision"]
    cfg_d = qwen2vl_config(t, v) if spec["kind"] == "qwen2_vl" else qwen25vl_config(t, v)
    cfg = R.Qwen2VLCfg(cfg_d)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg_d, f, indent=2)
        f.write("\n")
    W = make_weights(cfg, spec["seed"])
    R.write_safetensors(os.path.join(folder, "model.safetensors"), W)
    proc = R.ImageProcessor(spec["proc"])
    with open(os.path.join(folder, "preprocessor_config.json"), "w") as f:
        json.dump(proc.config_dict(), f, indent=2, sort_keys=True)
        f.write("\n")

    # images -> PNG -> processor (on the decoded PNGs, as a user of the folder would)
    from PIL import Image
    names, imgs, img_notes = [], [], []
    for i, im_spec in enumerate(spec["images"]):
        im = make_image(im_spec["h"], im_spec["w"], spec["seed"] * 10 + i, im_spec["mode"],
                        im_spec.get("quant", 1))
        fn = f"image{i}.png"
        im.save(os.path.join(folder, fn), optimize=True)
        names.append(fn)
        with Image.open(os.path.join(folder, fn)) as re:
            re.load()
            imgs.append(re.copy())
    if imgs:
        pr = proc(imgs)
        px, grid = pr["pixel_values"], pr["image_grid_thw"]
        for i, u8 in enumerate(pr["resized_u8"]):
            (h, w), (rh, rw) = pr["orig_hw"][i], u8.shape[:2]
            img_notes.append({
                "file": names[i], "png_mode": spec["images"][i]["mode"], "orig_hw": [h, w],
                "resized_hw": [rh, rw],
                "smart_resize_branch": smart_branch(h, w, proc.patch_size * proc.merge_size, proc.min_pixels,
                                                    proc.max_pixels),
                "grid_thw": [int(g) for g in grid[i]], "merged_grid_hw": [int(grid[i][1]) // 2, int(grid[i][2]) // 2],
                "tokens": int(grid[i].prod()) // 4,
            })
        tokens_per_image = [int(g.prod()) // 4 for g in grid]
    else:
        px = grid = None
        tokens_per_image = []

    model = R.Qwen2VL(W, cfg)
    # choose the text ids: the first variant whose every greedy step has a top1-top2 margin >= WANT_MARGIN (at
    # least MIN_MARGIN), whose generated ids avoid the marker ids 300-319 and hold >= the case's min_distinct
    # (default 4) distinct tokens
    found = None
    for want in (WANT_MARGIN, MIN_MARGIN):
        for variant in range(300):
            rng = np.random.default_rng(spec["seed"] * 1000 + variant)
            ids, layout = build_prompt(rng, spec["text_runs"], tokens_per_image)
            out = model.run(ids, px, grid, n_new=N_NEW, check_recompute=False)
            gen = out["generated_ids"][0].tolist()
            if (min(out["_gen_margins"]) >= want and max(gen) < 300
                    and len(set(gen)) >= spec.get("min_distinct", 4)):
                found = variant
                break
        if found is not None:
            break
    if found is None:
        raise RuntimeError(f"{name}: no variant with greedy margins >= {MIN_MARGIN}")
    out = model.run(ids, px, grid, n_new=N_NEW, check_recompute=True)

    arrays = {"input_ids": np.array([ids], dtype=np.int64), "mrope_position_ids": out["mrope_position_ids"],
              "logits": out["logits"].astype(np.float32), "generated_ids": out["generated_ids"]}
    write_px = spec.get("pixel_values_file", True)
    if px is not None:
        if write_px:
            arrays["pixel_values"] = px.astype(np.float32)
        arrays.update({"image_grid_thw": grid,
                       "vision_pre_merger": out["vision_pre_merger"].astype(np.float32),
                       "vision_output": out["vision_output"].astype(np.float32)})
        for k in ("vision_window_index", "vision_cu_window_seqlens"):
            if k in out:
                arrays[k] = out[k].astype(np.int64)
    for k, a in arrays.items():
        np.save(os.path.join(folder, k + ".npy"), a)

    lg = out["logits"][0]
    S = len(ids)
    pos = out["mrope_position_ids"]
    meta = {
        "case": name,
        "architecture": cfg_d["architectures"][0],
        "what_it_varies": spec["what"],
        "reference": "scripts/ref_qwen2_vl.py (plain torch port of transformers 4.47 Qwen2-VL / 4.49-4.51 "
                     "Qwen2.5-VL; validated against ../shared/refcases/qwen2_vl_s)",
        "seed": spec["seed"], "input_variant": variant,
        "text": {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                 "kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim, "mlp": cfg.intermediate_size,
                 "mrope_section": cfg.mrope_section, "rope_theta": cfg.rope_theta, "rms_norm_eps": cfg.rms_norm_eps,
                 "tie_word_embeddings": cfg.tie_word_embeddings},
        "vision": {"embed": cfg.v_embed, "depth": cfg.v_depth, "heads": cfg.v_num_heads,
                   "head_dim": cfg.v_embed // cfg.v_num_heads, "mlp": cfg.v_mlp_hidden, "act": cfg.v_act,
                   "out": cfg.v_out, "norm": "RMSNorm" if cfg.kind == "qwen2_5_vl" else "LayerNorm",
                   "window_size": cfg.v_window_size, "fullatt_block_indexes": cfg.v_fullatt},
        "tokens": {"vision_start": VSTART, "vision_end": VEND, "image": IMG, "video": VID, "bos_used": False},
        "prompt_length": S,
        "prompt_layout": layout,
        "images": names,
        "processor_check": {"photos": names, "kwargs": {"min_pixels": proc.min_pixels, "max_pixels": proc.max_pixels}},
        "image_notes": img_notes,
        "tokens_per_image": tokens_per_image,
        "rope_delta": out["_rope_delta"],
        "decode_positions": f"generated token k (k = 0..{N_NEW - 1}) is fed at position {S} + k + ({out['_rope_delta']}) "
                            f"= {int(pos.max()) + 1} + k in all three streams",
        "greedy": {"new_tokens": N_NEW, "eos_stopping": False,
                   "step_margins": [round(m, 6) for m in out["_gen_margins"]],
                   "min_top1_top2_margin_during_generation": min(out["_gen_margins"]),
                   "min_top1_top2_margin_over_prompt_positions": float(out["_prompt_margins"].min()),
                   "checked": "KV-cache decoding == full recomputation argmax at every step"},
        "logits_std": float(lg.std()),
        "weights": {"file": "model.safetensors", "dtype": "F32", "num_tensors": len(W),
                    "tensors": {k: list(W[k].shape) for k in sorted(W)}},
        "files": {k + ".npy": {"dtype": str(a.dtype), "shape": list(a.shape)} for k, a in sorted(arrays.items())},
        "notes": {
            "pixel_values": "our Qwen2VLImageProcessor port on the PNG files in this folder (one call, images in "
                            "prompt order); bit-identical to transformers 4.47 on qwen2_vl_s",
            "vision_pre_merger": "output of the last vision block, before merger.ln_q, rows in pixel_values order"
                                 + (" (the model computes in window order; rows were put back)"
                                    if cfg.kind == "qwen2_5_vl" else ""),
            "vision_output": "merger output, rows in image-token order (image 0 first)",
        },
    }
    if px is not None and not write_px:
        # no pixel_values.npy: what the processor made, so that a test's own processor output can be compared
        # (sha256 over the C-order little-endian float32 bytes, i.e. numpy's tobytes()); the resized uint8 image
        # (H x W x 3, before rescale / normalize) too, to tell a resize mismatch from a normalize / patchify one
        pv = np.ascontiguousarray(px, dtype="<f4")
        meta["pixel_values"] = {
            "file": None, "dtype": "float32", "shape": list(pv.shape),
            "sha256_of_float32_le_bytes": hashlib.sha256(pv.tobytes()).hexdigest(),
            "sum_float64": float(pv.astype(np.float64).sum()),
            "abs_sum_float64": float(np.abs(pv.astype(np.float64)).sum()),
            "min": float(pv.min()), "max": float(pv.max()),
            "row0_first8": [float(x) for x in pv[0, :8]], "last_row_last8": [float(x) for x in pv[-1, -8:]],
        }
        for note, u8 in zip(img_notes, pr["resized_u8"]):
            u8 = np.ascontiguousarray(u8, dtype=np.uint8)
            note["resized_u8_hwc_sha256"] = hashlib.sha256(u8.tobytes()).hexdigest()
            note["resized_u8_sum"] = int(u8.astype(np.int64).sum())
        meta["notes"]["pixel_values"] = (
            "not stored (size): run the processor on the PNG file(s) of this folder (preprocessor_config.json, one "
            "call, images in prompt order) and compare with meta.json pixel_values (shape, sha256 of the float32 "
            "little-endian bytes in C order, sums); image_notes[i].resized_u8_hwc_sha256 is the sha256 of the "
            "resized uint8 image (H x W x 3, C order) before rescale / normalize. Our processor port is "
            "bit-identical to transformers 4.47 on qwen2_vl_s")
    if cfg.kind == "qwen2_5_vl":
        meta["notes"]["vision_window_index"] = (
            "get_window_index: entry j = the merge unit (group of 4 consecutive pixel_values rows, numbered over "
            "all images) that goes to position j of the reordered sequence")
        meta["notes"]["vision_cu_window_seqlens"] = (
            "window boundaries in patch rows of the reordered sequence, after unique_consecutive")
        meta["window_index"] = out["vision_window_index"].tolist()
        meta["cu_window_seqlens"] = out["vision_cu_window_seqlens"].tolist()
    meta["sha256"] = {f: sha256(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"{name}: S={S} patches={0 if px is None else px.shape[0]} grid={[] if grid is None else grid.tolist()} "
          f"tokens/image={tokens_per_image} delta={out['_rope_delta']} variant={variant} "
          f"min margin={min(out['_gen_margins']):.4f} logits std={lg.std():.2f} gen={out['generated_ids'][0].tolist()} "
          f"size={size / 1024:.0f} KiB")
    return size


# ----------------------------------------------------------------------------------------------------------------
# smart_resize table
# ----------------------------------------------------------------------------------------------------------------
SR_DEFAULT = (56 * 56, 28 * 28 * 1280)
SMART_RESIZE_INPUTS = [
    # (height, width, min_pixels, max_pixels, factor, comment)
    (28, 28, 28 * 28, 1003520, 28, "the minimum: 1x1 merged token"),
    (28, 28, 3136, 1003520, 28, "28x28 with the default min_pixels: min branch -> 56x56"),
    (70, 70, 784, 1003520, 28, "tie 2.5 -> 2 (ties to even)"),
    (98, 98, 784, 1003520, 28, "tie 3.5 -> 4"),
    (42, 126, 784, 1003520, 28, "ties 1.5 -> 2 and 4.5 -> 4"),
    (154, 70, 784, 1003520, 28, "ties 5.5 -> 6 and 2.5 -> 2"),
    (69, 71, 784, 1003520, 28, "2.46 -> 2, 2.54 -> 3"),
    (300, 451, 3136, 12544, 28, "qwen2_vl_s cat photo: max branch"),
    (600, 512, 3136, 12544, 28, "qwen2_vl_s hopper photo: max branch"),
    (1080, 1920, 3136, 1003520, 28, "full HD with the default max_pixels"),
    (1000, 1000, 3136, 1003520, 28, "max branch just above the limit (1008x1008 > max)"),
    (112, 112, 3136, 12544, 28, "product == max_pixels: stays (strict >)"),
    (56, 56, 3136, 1003520, 28, "product == min_pixels: stays (strict <)"),
    (30, 40, 3136, 1003520, 28, "min branch"),
    (29, 45, 2000, 1003520, 28, "min branch, ceil"),
    (58, 30, 3900, 1003520, 28, "min branch (qwen25vl_two_images image 1)"),
    (30, 135, 3900, 1003520, 28, "28x140 == 3920 >= min_pixels: round branch (qwen25vl_two_images image 0)"),
    (108, 180, 3136, 84 * 140, 28, "max branch (qwen25vl_window)"),
    (40, 200, 784, 4000, 28, "max branch (qwen2vl_three_images_tied image 1)"),
    (42, 30, 784, 4000, 28, "tie 1.5 -> 2 (qwen2vl_three_images_tied image 2)"),
    (225, 400, 3136, 12544, 28, "float order matters: height / beta / factor = 2.9999999999999996 -> floor 2 "
                                 "(height / (beta * factor) would give 3)"),
    (450, 800, 3136, 200704, 28, "float order matters in the max branch (308, not 336)"),
    (38, 38, 3136, 1003520, 28, "float order matters: height * beta / factor = 2.0000000000000004 -> ceil 3 "
                                "(exactly 2 in real arithmetic): 84x84, not 56x56"),
    (46, 46, 200704, 1003520, 28, "min branch, float order matters the other way: height * beta / factor "
                                  "is exactly 16.0 -> 448 (height * (beta / factor) would ceil to 17 -> 476)"),
    (28, 5600, 784, 1003520, 28, "aspect ratio exactly 200: allowed"),
    (5600, 28, 784, 1003520, 28, "aspect ratio exactly 200, portrait: allowed"),
    (28, 5601, 784, 1003520, 28, "aspect ratio just above 200: error"),
    (50, 10001, 784, 100000000, 28, "aspect ratio 200.02: error"),
    (27, 100, 784, 1003520, 28, "height below factor: error"),
    (100, 27, 784, 1003520, 28, "width below factor: error"),
    (1, 1, 784, 1003520, 28, "1x1: error"),
    (28, 5600, 784, 100000, 28, "max branch floors the short side to 0 (4.47 has no max(factor, .) clamp); "
                                "the Pillow resize then raises ValueError, so the processor call fails"),
    (40, 400, 784, 7056, 28, "max branch floors the short side to 0; the processor call fails"),
    (3000, 4000, 3136, 1003520, 28, "large photo"),
    (480, 640, 3136, 1003520, 28, "VGA"),
    (64, 64, 4096, 16384, 32, "factor 32 (patch 16, merge 2)"),
    (500, 375, 4096, 65536, 32, "factor 32 max branch"),
    (33, 47, 256, 4096, 16, "factor 16"),
]


def write_smart_resize(root):
    rows = []
    for h, w, mn, mx, fac, note in SMART_RESIZE_INPUTS:
        r = {"height": h, "width": w, "min_pixels": mn, "max_pixels": mx, "factor": fac}
        try:
            oh, ow = R.smart_resize(h, w, fac, mn, mx)
            if oh == 0 or ow == 0:  # smart_resize returns it, Image.resize raises: an error end to end
                r.update({"error": True, "smart_resize_returns": [oh, ow]})
            else:
                r.update({"out_height": oh, "out_width": ow})
            r["branch"] = smart_branch(h, w, fac, mn, mx)
        except ValueError:
            r["error"] = True
        r["note"] = note
        rows.append(r)
    path = os.path.join(root, "smart_resize.json")
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join("  " + json.dumps(r) for r in rows) + "\n]\n")
    print(f"smart_resize.json: {len(rows)} entries")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(here, "tests", "data", "qwen2_vl"))
    ap.add_argument("--only", nargs="*", help="case names to write (default: all)")
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    total = 0
    for spec in CASES:
        if a.only and spec["name"] not in a.only:
            continue
        total += write_case(spec, a.out)
    write_smart_resize(a.out)
    print(f"total {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
