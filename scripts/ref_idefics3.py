#!/usr/bin/python3
"""Independent fp32 reference for Hugging Face Idefics3 / SmolVLM (`Idefics3ForConditionalGeneration`,
transformers 4.47.1) with `Idefics3ImageProcessor` and `Idefics3Processor`'s prompt expansion. Configs in the
SmolVLM layout (`SmolVLMForConditionalGeneration`, model_type "smolvlm" / "smolvlm_vision", same tensor names) are
read too; see "SmolVLM" below for the one processor difference.

Plain torch + numpy + PIL, written from the transformers modelling code (modeling_idefics3.py,
image_processing_idefics3.py, processing_idefics3.py, configuration_idefics3.py, modeling_llama.py) so that golden
files can be made without `transformers`. Run it with Debian's /usr/bin/python3 (torch 1.13, numpy 1.24, Pillow 9.4).
Batch size 1 (one prompt; any number of images in it), no padding of the text.

What it computes, as transformers 4.47.1 does:
  Image processor (one call over the prompt's images, in order):
    1. PIL -> numpy (mode P keeps its indices and palette; L becomes H x W x 1).
    2. do_resize with size {"longest_edge": L}: w >= h: w' = L, h' = int(L / (w / h)) (+1 if odd);
       h > w: h' = L, w' = int(L * (w / h)) (+1 if odd); both >= 1 (Python float64, int() truncates). Then
       "scale below upper bound" 1820 (L > 1820 raises). An odd L on a square image gives h x w = (L+1) x L.
       size {"height", "width"} resizes to exactly that.
    3. do_image_splitting: resize_for_vision_encoder with M = max_image_size["longest_edge"]: w >= h:
       w' = ceil(w / M) * M, h' = ceil(int(w' / (w / h)) / M) * M; h > w: h' = ceil(h / M) * M,
       w' = ceil(int(h' * (w / h)) / M) * M. Then split_image: if h' > M or w' > M: rows = ceil(h' / M),
       cols = ceil(w' / M), crops of ceil(h'/rows) x ceil(w'/cols) row-major (always M x M here), then the
       whole image resized to M x M (aspect ratio not kept; always LANCZOS, whatever `resample` says) appended as
       the global image; else rows = cols = 0 and the image itself is the only frame.
       Without splitting: rows = cols = 0, one frame = the resized image (4.47.1 does not square it; see SmolVLM).
    4. Every resize is Pillow's Image.resize((w, h), resample) on uint8 (resample 1 = LANCZOS); an image with one
       channel is resized as mode "P", which Pillow resizes with NEAREST whatever `resample` says.
    5. do_convert_rgb, after resizing / splitting: RGBA (or P with its palette, or L) -> RGBA -> alpha-composited
       over opaque white -> RGB (RGB input is unchanged).
    6. x = float32(float64(u8) * rescale_factor); x = (x - float32(mean)) / float32(std) in float32.
    7. do_pad: every frame zero-padded (after normalisation, so the value 0.0) at the bottom / right to the
       largest frame height and width of the call; pixel_attention_mask int64 = 1 on the frame's own pixels.
    Output pixel_values (1, n_frames, 3, H, W) float32, pixel_attention_mask (1, n_frames, H, W) int64, rows and
    cols per image.
  Processor prompt expansion of every "<image>" (image i of the prompt, rows r_i, cols c_i, image_seq_len N):
    split:   for each row r: for each col c: "<fake_token_around_image><row_{r}_col_{c}>" + "<image>" * N;
             "\\n" after each row; then "\\n<fake_token_around_image><global-img>" + "<image>" * N +
             "<fake_token_around_image>"
    unsplit: "<fake_token_around_image><global-img>" + "<image>" * N + "<fake_token_around_image>"
    Tokenised here with the refcases toy vocabulary: "w<id>" -> id, "\\n" -> newline id (300), the special
    strings -> their ids (meta.json), whitespace dropped, BOS prepended. (4.47.1's processor fails on a text-only
    prompt; text-only cases are tokenised directly.)
  Vision (Idefics3VisionTransformer, SigLIP-style): frames that are all exactly 0.0 are dropped
    (real_images_inds); patch_attention_mask[i, j] = any(pixel_attention_mask over patch (i, j)); patch
    embedding = Conv2d(3, E, p, stride p) with bias (== one matmul on the flattened (c, y, x) patch + bias);
    position ids: nps = image_size // patch_size, boundaries = torch.arange(1/nps, 1.0, 1/nps) (float32),
    for the tile's nb_h = number of real patch rows, nb_w = real patch columns:
    fh = torch.arange(0, 1 - 1e-6, 1 / nb_h) (float32; 1/nb_h is a float32 tensor), bucket_h =
    bucketize(fh, boundaries, right=True), same for w, id = bucket_h * nps + bucket_w, written into the real
    patches in row-major order; padding patches get id 0. Encoder layers: x += out_proj(attn(LN1 x)) (q/k/v/out
    with biases, scale head_dim^-0.5, softmax in fp32, key padding mask = finfo(float32).min added to scores of
    padding patches; padding patches are still computed as queries), x += fc2(act(fc1(LN2 x))), LayerNorm eps
    layer_norm_eps; post_layernorm. -> vision_last_hidden_state (n_real, gh * gw, E).
  Connector: pixel_shuffle(x, s) exactly as HF (view (n, h, w, E) with h = w = int(sqrt(seq)); view
    (n, h, w/s, E*s); permute(0,2,1,3); reshape (n, w/s, h/s, E*s*s); permute(0,2,1,3); reshape (n, seq/s^2,
    E*s^2)), i.e. output token (i, j) of the (h/s) x (w/s) grid = concat over a = 0..s-1 (rows) of concat over
    b = 0..s-1 (cols) of patch (i*s + a, j*s + b); then modality_projection.proj (no bias). -> connector_output.
  Text: Llama decoder (RMSNorm, rotate-half RoPE (default / linear / llama3 / dynamic-at-init), GQA, SwiGLU,
    attention_bias / mlp_bias), final norm; lm_head, or the input embeddings when the **top-level**
    tie_word_embeddings is true (Idefics3ForConditionalGeneration.tie_weights reads the top-level field, not
    text_config's). The embeddings of the image_token_id positions are replaced, in order, by the connector rows
    (tile by tile, global image last, image by image). Positions 0..S-1. Logits at every prompt position (one
    full pass) and 8 greedy tokens (KV cache, no EOS stop; a generated image token id is embedded as a plain
    token) checked against full recomputation.
  SmolVLM: transformers >= 4.50 (SmolVLMImageProcessor, and Idefics3ImageProcessor from the same release) square
    an unsplit image to M x M (LANCZOS) instead of keeping its aspect ratio. That is applied here only when
    preprocessor_config.json says "image_processor_type": "SmolVLMImageProcessor" (or --square-unsplit).

CLI:
  ref_idefics3.py check DIR [DIR ...]   recompute each case folder: the processor on its photos (pixel_values,
                                        pixel_attention_mask, rows/cols) and the prompt from meta.json
                                        (input_ids), and the model on the saved pixel_values /
                                        pixel_attention_mask / input_ids; compare with the saved files
  ref_idefics3.py run DIR [--out OUT]   run a folder's inputs and print (and write) the outputs
  ref_idefics3.py geometry H W --longest-edge L --tile M [--no-split]   print the processor geometry
  ref_idefics3.py selftest              position-bucket emulation (pure Python float32, AVX2 torch.arange
                                        semantics) == torch, and the pixel-shuffle formula == HF's reshapes
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_llava import (Llama, LlamaCfg, _get, act, greedy, load_weights, top_margins,  # noqa: E402
                       read_safetensors, write_safetensors)

torch.set_grad_enabled(False)

__all__ = ["read_safetensors", "write_safetensors", "ImageProcessor", "Idefics3Cfg", "Idefics3", "expand_prompt",
           "tokenize", "run_folder", "check_folder"]

IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]
LANCZOS = 1
MAX_IMAGE_SIZE_BOUND = 1820  # get_resize_output_image_size(max_image_size=1820)


# ----------------------------------------------------------------------------------------------------------------
# processor geometry
# ----------------------------------------------------------------------------------------------------------------
def size_rescale_to_max_len(height, width, max_len, min_len=1):
    """_resize_output_size_rescale_to_max_len (float64 aspect, int() truncation, odd -> +1)."""
    aspect = width / height
    if width >= height:
        width = max_len
        height = int(width / aspect)
        if height % 2 != 0:
            height += 1
    else:
        height = max_len
        width = int(height * aspect)
        if width % 2 != 0:
            width += 1
    return max(height, min_len), max(width, min_len)


def size_scale_below_upper_bound(height, width, max_len):
    """_resize_output_size_scale_below_upper_bound."""
    aspect = width / height
    if width >= height and width > max_len:
        width = max_len
        height = int(width / aspect)
    elif height > width and height > max_len:
        height = max_len
        width = int(height * aspect)
    return max(height, 1), max(width, 1)


def resize_output_size(height, width, longest_edge):
    """get_resize_output_image_size(image, resolution_max_side=longest_edge) -> (h, w)."""
    if longest_edge > MAX_IMAGE_SIZE_BOUND:
        raise ValueError("`resolution_max_side` cannot be larger than `max_image_size`")
    h, w = size_rescale_to_max_len(height, width, longest_edge)
    return size_scale_below_upper_bound(h, w, MAX_IMAGE_SIZE_BOUND)


def vision_encoder_size(height, width, tile):
    """resize_for_vision_encoder target (h, w): multiples of tile."""
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = int(width / aspect)
        height = math.ceil(height / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = int(height * aspect)
        width = math.ceil(width / tile) * tile
    return height, width


def split_boxes(height, width, tile):
    """split_image geometry: (rows, cols, [(y0, y1, x0, x1) row-major]) (rows = cols = 0: not split)."""
    if height > tile or width > tile:
        rows, cols = math.ceil(height / tile), math.ceil(width / tile)
        oh, ow = math.ceil(height / rows), math.ceil(width / cols)
        boxes = []
        for r in range(rows):
            for c in range(cols):
                y0, x0 = r * oh, c * ow
                boxes.append((y0, min(y0 + oh, height), x0, min(x0 + ow, width)))
        return rows, cols, boxes
    return 0, 0, []


def geometry(height, width, longest_edge, tile, split=True, do_resize=True):
    """Sizes the processor goes through for one image: dict resized, encoder, rows, cols, frames (h, w)."""
    h, w = resize_output_size(height, width, longest_edge) if do_resize else (height, width)
    g = {"input": [height, width], "resized": [h, w]}
    if split:
        eh, ew = vision_encoder_size(h, w, tile)
        rows, cols, boxes = split_boxes(eh, ew, tile)
        g["encoder"] = [eh, ew]
        frames = [[b[1] - b[0], b[3] - b[2]] for b in boxes] + [[tile, tile] if rows else [eh, ew]]
    else:
        rows = cols = 0
        frames = [[h, w]]
    g.update({"rows": rows, "cols": cols, "frames": frames})
    return g


# ----------------------------------------------------------------------------------------------------------------
# image processor
# ----------------------------------------------------------------------------------------------------------------
def _pil_resize_np(arr, h, w, resample):
    """Idefics3ImageProcessor.resize on an H x W x C uint8 array: one-channel images go through PIL mode "P"
    (resized NEAREST by Pillow), others through fromarray's default mode (RGB / RGBA)."""
    from PIL import Image
    mode = "P" if arr.ndim == 2 or arr.shape[-1] == 1 else None
    a = arr[..., 0] if arr.ndim == 3 and arr.shape[-1] == 1 else arr
    im = Image.fromarray(a.astype(np.uint8), mode=mode)
    out = np.array(im.resize((w, h), resample=resample))
    if out.ndim == 2:
        out = out[..., None]
    return out


def _convert_rgb_np(arr, palette):
    """convert_to_rgb: to PIL (mode P with the palette when the source was P), RGBA, composited over white, RGB."""
    from PIL import Image
    a = arr[..., 0] if arr.shape[-1] == 1 else arr
    im = Image.fromarray(a.astype(np.uint8), mode="P" if palette is not None else None)
    if im.mode == "P" and palette is not None:
        im.putpalette(palette)
    rgba = im.convert("RGBA")
    bg = Image.new("RGBA", rgba.size, (255, 255, 255))
    return np.array(Image.alpha_composite(bg, rgba).convert("RGB"))


class ImageProcessor:
    """Idefics3ImageProcessor (transformers 4.47.1) from a preprocessor_config.json dict (+ kwargs)."""

    def __init__(self, d=None, square_unsplit=None):
        d = dict(d or {})
        self.do_convert_rgb = bool(_get(d, "do_convert_rgb", True))
        self.do_resize = bool(_get(d, "do_resize", True))
        self.size = dict(_get(d, "size", {"longest_edge": 4 * 364}))
        self.resample = int(_get(d, "resample", LANCZOS))
        self.do_image_splitting = bool(_get(d, "do_image_splitting", True))
        self.max_image_size = dict(_get(d, "max_image_size", {"longest_edge": 364}))
        self.do_rescale = bool(_get(d, "do_rescale", True))
        self.rescale_factor = float(_get(d, "rescale_factor", 1 / 255))
        self.do_normalize = bool(_get(d, "do_normalize", True))
        self.image_mean = list(_get(d, "image_mean", IMAGENET_STANDARD_MEAN))
        self.image_std = list(_get(d, "image_std", IMAGENET_STANDARD_STD))
        self.do_pad = bool(_get(d, "do_pad", True))
        self.image_processor_type = d.get("image_processor_type", "Idefics3ImageProcessor")
        if square_unsplit is None:
            square_unsplit = self.image_processor_type == "SmolVLMImageProcessor"
        self.square_unsplit = bool(square_unsplit)

    def config_dict(self):
        """The preprocessor_config.json that transformers 4.47.1 writes for these settings."""
        return {"do_convert_rgb": self.do_convert_rgb, "do_image_splitting": self.do_image_splitting,
                "do_normalize": self.do_normalize, "do_pad": self.do_pad, "do_rescale": self.do_rescale,
                "do_resize": self.do_resize, "image_mean": self.image_mean,
                "image_processor_type": self.image_processor_type, "image_std": self.image_std,
                "max_image_size": self.max_image_size, "resample": self.resample,
                "rescale_factor": self.rescale_factor, "size": self.size}

    def _resize(self, arr, size, resample):
        h, w = arr.shape[:2]
        if "longest_edge" in size:
            th, tw = resize_output_size(h, w, int(size["longest_edge"]))
        elif "height" in size and "width" in size:
            th, tw = int(size["height"]), int(size["width"])
        else:
            raise ValueError("size must be a dictionary with key 'longest_edge' or 'height' and 'width'.")
        return _pil_resize_np(arr, th, tw, resample)

    def __call__(self, images):
        """images: list of PIL images (one prompt). Returns dict pixel_values (1, n, 3, H, W) float32,
        pixel_attention_mask (1, n, H, W) int64, rows, cols (lists per image), frames_u8 (list of H x W x 3
        uint8 after RGB conversion, before rescale), frames_per_image."""
        arrays, palettes = [], []
        for im in images:
            if im.mode not in ("RGB", "RGBA", "L", "P"):
                raise ValueError(f"image mode {im.mode!r} not supported by this port")
            palettes.append(im.getpalette() if im.mode == "P" else None)
            a = np.array(im)
            if a.ndim == 2:
                a = a[..., None]
            if a.shape[0] in (1, 3, 4):
                # infer_channel_dimension_format would take the first axis for the channels
                raise ValueError("images 1, 3 or 4 pixels tall are read as channels-first by transformers")
            arrays.append(a)
        if self.do_resize:
            arrays = [self._resize(a, self.size, self.resample) for a in arrays]
        tile = int(self.max_image_size["longest_edge"])
        frames, frame_pal, rows, cols, per_image = [], [], [], [], []
        for a, pal in zip(arrays, palettes):
            if self.do_image_splitting:
                eh, ew = vision_encoder_size(a.shape[0], a.shape[1], tile)
                a = _pil_resize_np(a, eh, ew, self.resample)
                r, c, boxes = split_boxes(eh, ew, tile)
                fr = [a[y0:y1, x0:x1] for (y0, y1, x0, x1) in boxes]
                if r:
                    if (eh, ew) != (tile, tile):
                        a = _pil_resize_np(a, tile, tile, LANCZOS)  # split_image's own default resample
                fr.append(a)
            else:
                r = c = 0
                if self.square_unsplit:
                    a = _pil_resize_np(a, tile, tile, LANCZOS)
                fr = [a]
            frames += fr
            frame_pal += [pal] * len(fr)
            rows.append(r)
            cols.append(c)
            per_image.append(len(fr))
        if self.do_convert_rgb:
            frames = [_convert_rgb_np(f, p) for f, p in zip(frames, frame_pal)]
        u8 = [np.ascontiguousarray(f) for f in frames]
        xs = []
        for f in frames:
            x = f
            if self.do_rescale:
                x = (x.astype(np.float64) * self.rescale_factor).astype(np.float32)
            if self.do_normalize:
                x = x.astype(np.float32)
                x = (x - np.array(self.image_mean, dtype=np.float32)) / np.array(self.image_std, dtype=np.float32)
            xs.append(x.astype(np.float32))
        if self.do_pad:
            H = max(x.shape[0] for x in xs)
            Wd = max(x.shape[1] for x in xs)
        else:
            if len({x.shape for x in xs}) != 1:
                raise ValueError("do_pad false with frames of different sizes")
            H, Wd = xs[0].shape[:2]
        C = xs[0].shape[2]
        pv = np.zeros((1, len(xs), C, H, Wd), dtype=np.float32)
        mask = np.zeros((1, len(xs), H, Wd), dtype=np.int64)
        for i, x in enumerate(xs):
            pv[0, i, :, :x.shape[0], :x.shape[1]] = np.transpose(x, (2, 0, 1))
            mask[0, i, :x.shape[0], :x.shape[1]] = 1
        out = {"pixel_values": pv, "rows": rows, "cols": cols, "frames_u8": u8, "frames_per_image": per_image}
        if self.do_pad:
            out["pixel_attention_mask"] = mask
        return out


# ----------------------------------------------------------------------------------------------------------------
# prompt expansion and the toy tokenizer
# ----------------------------------------------------------------------------------------------------------------
FAKE, GLOBAL, IMAGE = "<fake_token_around_image>", "<global-img>", "<image>"


def image_prompt_string(rows, cols, image_seq_len):
    """get_image_prompt_string (processing_idefics3.py)."""
    if rows == 0 and cols == 0:
        return FAKE + GLOBAL + IMAGE * image_seq_len + FAKE
    s = ""
    for r in range(rows):
        for c in range(cols):
            s += FAKE + f"<row_{r + 1}_col_{c + 1}>" + IMAGE * image_seq_len
        s += "\n"
    s += "\n" + FAKE + GLOBAL + IMAGE * image_seq_len + FAKE
    return s


def expand_prompt(text, rows, cols, image_seq_len):
    """Idefics3Processor.__call__'s replacement of each "<image>" by its image prompt string."""
    parts = text.split(IMAGE)
    if len(parts) - 1 != len(rows):
        raise ValueError(f"The number of images in the text {len(parts) - 1} and images {len(rows)} should be "
                         "the same.")
    s = parts[0]
    for i, (r, c) in enumerate(zip(rows, cols)):
        s += image_prompt_string(r, c, image_seq_len) + parts[i + 1]
    return s


def tokenize(text, specials, newline_id=300, bos_id=1):
    """refcases toy vocabulary: BOS, then "w<id>" -> id, "\\n" -> newline_id, specials {string: id}; spaces are
    not tokens."""
    names = sorted(specials, key=len, reverse=True)
    pat = re.compile("|".join([re.escape(n) for n in names] + [r"\n", r"w\d+", r"[ \t]+"]))
    ids = [] if bos_id is None else [int(bos_id)]
    pos = 0
    while pos < len(text):
        m = pat.match(text, pos)
        if not m:
            raise ValueError(f"cannot tokenise {text[pos:pos + 30]!r}")
        t = m.group(0)
        if t in specials:
            ids.append(int(specials[t]))
        elif t == "\n":
            ids.append(int(newline_id))
        elif t[0] == "w":
            ids.append(int(t[1:]))
        pos = m.end()
    return ids


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------
class Idefics3Cfg:
    """Idefics3Config / Idefics3VisionConfig (4.47.1) with the text config as LlamaConfig; SmolVLMConfig read
    the same way."""

    def __init__(self, d):
        arch = (d.get("architectures") or [None])[0]
        mt = d.get("model_type")
        if arch in ("Idefics3ForConditionalGeneration", "Idefics3Model") or mt == "idefics3":
            self.kind = "idefics3"
        elif arch in ("SmolVLMForConditionalGeneration", "SmolVLMModel") or mt == "smolvlm":
            self.kind = "smolvlm"
        else:
            raise ValueError(f"unsupported architecture {arch!r} / model_type {mt!r}")
        self.image_token_id = int(_get(d, "image_token_id", 128257))
        self.tie_word_embeddings = bool(_get(d, "tie_word_embeddings", False))
        self.scale_factor = int(_get(d, "scale_factor", 2))
        v = d.get("vision_config") or {}
        self.v_hidden = int(_get(v, "hidden_size", 1152))
        self.v_inter = int(_get(v, "intermediate_size", 3072))
        self.v_layers = int(_get(v, "num_hidden_layers", 12))
        self.v_heads = int(_get(v, "num_attention_heads", 16))
        self.v_channels = int(_get(v, "num_channels", 3))
        self.v_image_size = int(_get(v, "image_size", 224))
        self.v_patch = int(_get(v, "patch_size", 32))
        self.v_act = _get(v, "hidden_act", "gelu_pytorch_tanh")
        self.v_eps = float(_get(v, "layer_norm_eps", 1e-6))
        if self.v_hidden % self.v_heads:
            raise ValueError("vision hidden_size must be a multiple of num_attention_heads")
        self.nps = self.v_image_size // self.v_patch
        t = d.get("text_config")
        if t is None:
            t = {"rms_norm_eps": 1e-5, "pad_token_id": _get(d, "pad_token_id", 128002)}
        if t.get("model_type", "llama") != "llama":
            raise ValueError(f"text_config.model_type {t.get('model_type')!r}: only llama")
        self.text = LlamaCfg(t)
        # Idefics3ForConditionalGeneration.tie_weights: getattr(self.config, "tie_word_embeddings", True), i.e.
        # the top-level field decides.
        self.text.tie_word_embeddings = self.tie_word_embeddings
        self.image_seq_len = int((self.nps ** 2) / (self.scale_factor ** 2))


def load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return Idefics3Cfg(json.load(f))


# ----------------------------------------------------------------------------------------------------------------
# vision tower + connector
# ----------------------------------------------------------------------------------------------------------------
def bucket_position_ids(patch_mask, nps):
    """Idefics3VisionEmbeddings position ids. patch_mask (n, gh, gw) bool -> (n, gh*gw) int64."""
    n, gh, gw = patch_mask.shape
    boundaries = torch.arange(1 / nps, 1.0, 1 / nps)
    pos = torch.full((n, gh * gw), 0, dtype=torch.int64)
    for i in range(n):
        m = patch_mask[i]
        nb_h = m[:, 0].sum()
        nb_w = m[0].sum()
        fh = torch.arange(0, 1 - 1e-6, 1 / nb_h)
        fw = torch.arange(0, 1 - 1e-6, 1 / nb_w)
        bh = torch.bucketize(fh, boundaries, right=True)
        bw = torch.bucketize(fw, boundaries, right=True)
        pos[i][m.reshape(-1)] = (bh[:, None] * nps + bw).flatten()
    return pos


def _arange_f32_avx2(start, end, step):
    """torch.arange(start, end, step) as float32 on a CPU build dispatching AVX2 (pure Python emulation):
    n = ceil((end - start) / step) in float64; elements in whole pairs of 8-wide vectors are
    float32(float32(start + step * j) + k * step) (j = index rounded down to a multiple of 8, k = index - j,
    float64 arithmetic), the tail float32(start + step * i)."""
    n = math.ceil((end - start) / step)
    full = (n // 16) * 16
    out = []
    for i in range(n):
        if i < full:
            j = i - i % 8
            out.append(np.float32(float(np.float32(start + step * j)) + (i % 8) * step))
        else:
            out.append(np.float32(start + step * i))
    return out


def bucket_ids_emulated(nb, nps):
    """Position buckets of nb real patches on an nps-wide table, without torch (see _arange_f32_avx2)."""
    b = _arange_f32_avx2(1.0 / nps, 1.0, 1.0 / nps)
    step = float(np.float32(1.0) / np.float32(nb))
    f = _arange_f32_avx2(0.0, 1 - 1e-6, step)
    return [sum(1 for bb in b if bb <= x) for x in f]


def pixel_shuffle(x, s):
    """Idefics3Connector.pixel_shuffle, HF's view / permute sequence."""
    n, seq, E = x.shape
    h = w = int(seq ** 0.5)
    x = x.view(n, h, w, E)
    x = x.view(n, h, int(w / s), E * s)
    x = x.permute(0, 2, 1, 3)
    x = x.reshape(n, int(w / s), int(h / s), E * s * s)
    x = x.permute(0, 2, 1, 3)
    return x.reshape(n, int(seq / (s * s)), E * s * s)


def pixel_shuffle_formula(x, s):
    """The same by its closed form: token (i, j) = concat_a concat_b patch (i*s + a, j*s + b)."""
    n, seq, E = x.shape
    g = int(seq ** 0.5)
    p = x.reshape(n, g, g, E)
    rows = []
    for i in range(g // s):
        for j in range(g // s):
            rows.append(torch.cat([p[:, i * s + a, j * s + b] for a in range(s) for b in range(s)], -1))
    return torch.stack(rows, 1)


def _lin(x, W, name, bias=True):
    y = x @ W[name + ".weight"].t()
    if bias:
        y = y + W[name + ".bias"]
    return y


class Vision:
    def __init__(self, W, cfg, prefix="model.vision_model."):
        self.W, self.cfg, self.p = W, cfg, prefix
        self.act = act(cfg.v_act)

    def ln(self, x, name):
        return F.layer_norm(x, (x.shape[-1],), self.W[name + ".weight"], self.W[name + ".bias"], self.cfg.v_eps)

    def forward(self, pixel_values, patch_mask):
        """pixel_values (n, C, H, W) float32 (real frames only), patch_mask (n, gh, gw) bool.
        Returns dict last_hidden_state (n, gh*gw, E), position_ids (n, gh*gw)."""
        c, W, P = self.cfg, self.W, self.p
        px = torch.as_tensor(np.asarray(pixel_values, dtype=np.float32))
        n = px.shape[0]
        x = F.conv2d(px, W[P + "embeddings.patch_embedding.weight"], W[P + "embeddings.patch_embedding.bias"],
                     stride=c.v_patch)
        x = x.flatten(2).transpose(1, 2)  # (n, gh*gw, E)
        pos = bucket_position_ids(patch_mask, c.nps)
        x = x + W[P + "embeddings.position_embedding.weight"][pos]
        flat = patch_mask.reshape(n, -1)
        add = None
        if bool((~flat).any()):
            add = torch.zeros(n, 1, 1, flat.shape[1], dtype=torch.float32)
            add = add.masked_fill(~flat[:, None, None, :], torch.finfo(torch.float32).min)
        E, H = c.v_hidden, c.v_heads
        hd = E // H
        T = x.shape[1]
        for il in range(c.v_layers):
            p = f"{P}encoder.layers.{il}."
            a = self.ln(x, p + "layer_norm1")
            q = _lin(a, W, p + "self_attn.q_proj").view(n, T, H, hd).transpose(1, 2)
            k = _lin(a, W, p + "self_attn.k_proj").view(n, T, H, hd).transpose(1, 2)
            v = _lin(a, W, p + "self_attn.v_proj").view(n, T, H, hd).transpose(1, 2)
            sc = torch.matmul(q, k.transpose(2, 3)) * (hd ** -0.5)
            if add is not None:
                sc = sc + add
            pr = torch.softmax(sc, dim=-1, dtype=torch.float32)
            o = torch.matmul(pr, v).transpose(1, 2).reshape(n, T, E)
            x = x + _lin(o, W, p + "self_attn.out_proj")
            m = self.ln(x, p + "layer_norm2")
            x = x + _lin(self.act(_lin(m, W, p + "mlp.fc1")), W, p + "mlp.fc2")
        x = self.ln(x, P + "post_layernorm")
        return {"last_hidden_state": x, "position_ids": pos}


class Idefics3:
    def __init__(self, W, cfg):
        self.W, self.cfg = W, cfg
        self.vision = Vision(W, cfg)
        self.lm = Llama(W, cfg.text, "model.text_model.", "lm_head.weight")

    def image_features(self, pixel_values, pixel_attention_mask=None):
        """pixel_values (1, N, C, H, W), pixel_attention_mask (1, N, H, W) or None. Returns dict with
        real_images (N,) bool, patch_attention_mask, position_ids, vision_last_hidden_state, connector_output."""
        c = self.cfg
        pv = torch.as_tensor(np.asarray(pixel_values, dtype=np.float32))
        b, N = pv.shape[:2]
        pv = pv.view(b * N, *pv.shape[2:])
        per = pv.shape[1:].numel()
        real = (pv == 0.0).sum(dim=(-1, -2, -3)) != per
        pv = pv[real].contiguous()
        if pixel_attention_mask is None:
            pm = torch.ones((pv.shape[0], pv.shape[2], pv.shape[3]), dtype=torch.bool)
        else:
            pm = torch.as_tensor(np.asarray(pixel_attention_mask))
            pm = pm.view(b * N, *pm.shape[2:])[real].contiguous()
        p = c.v_patch
        sub = pm.unfold(1, p, p).unfold(2, p, p)
        patch_mask = sub.sum(dim=(-1, -2)) > 0
        vo = self.vision.forward(pv, patch_mask)
        hs = vo["last_hidden_state"]
        conn = pixel_shuffle(hs, c.scale_factor)
        conn = conn @ self.W["model.connector.modality_projection.proj.weight"].t()
        return {"real_images": real.numpy(), "patch_attention_mask": patch_mask.numpy(),
                "position_ids": vo["position_ids"].numpy(), "vision_last_hidden_state": hs,
                "connector_output": conn}

    def embed_prompt(self, ids, rows):
        ids_t = torch.as_tensor(ids, dtype=torch.int64).reshape(-1)
        x = self.lm.embed(ids_t).clone()
        mask = ids_t == self.cfg.image_token_id
        n = int(mask.sum())
        nf = 0 if rows is None else rows.shape[0]
        if rows is not None and n != nf:
            raise ValueError(f"{n} image tokens for {nf} image feature rows")
        if rows is not None:
            x[mask] = rows
        return x

    def run(self, ids, pixel_values=None, pixel_attention_mask=None, n_new=8, check_recompute=True):
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        out, rows = {}, None
        if pixel_values is not None:
            fo = self.image_features(pixel_values, pixel_attention_mask)
            out["vision_last_hidden_state"] = fo["vision_last_hidden_state"].numpy()
            out["connector_output"] = fo["connector_output"].numpy()
            out["_real_images"] = fo["real_images"]
            out["_patch_attention_mask"] = fo["patch_attention_mask"]
            out["_position_ids"] = fo["position_ids"]
            rows = fo["connector_output"].reshape(-1, fo["connector_output"].shape[-1])
        emb = self.embed_prompt(ids, rows)
        lm = self.lm
        full, _ = lm.forward(emb, None, 0)
        recompute = ((lambda g: lm.forward(torch.cat((emb, lm.embed(g)), 0) if g else emb)[0])
                     if check_recompute else None)
        gen, cached, margins = greedy(lm, emb, n_new, recompute_fn=recompute)
        if not torch.allclose(full, cached, atol=1e-5, rtol=0):
            raise RuntimeError("prompt logits differ between the cached and uncached paths")
        out["logits"] = full[None].numpy()
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


def folder_processor(folder, square_unsplit=None):
    """(ImageProcessor, processor_check dict, image file names) of a case folder."""
    meta = _json(folder, "meta.json") or {}
    pc = meta.get("processor_check") or {}
    names = pc.get("photos") or pc.get("images") or meta.get("images") or []
    d = dict(_json(folder, "preprocessor_config.json") or {})
    d.update(pc.get("kwargs") or {})
    return ImageProcessor(d, square_unsplit), pc, names


def folder_specials(folder):
    """({special string: id}, newline id, bos id) from meta.json (refcases layout)."""
    meta = _json(folder, "meta.json") or {}
    notes = (meta.get("notes") or {}).get("processor") or {}
    specials = dict(notes.get("specials") or meta.get("specials") or {})
    it = meta.get("image_tokens") or {}
    return specials, int(it.get("newline_id", 300)), it.get("bos_id", 1)


def folder_image_seq_len(folder, cfg):
    meta = _json(folder, "meta.json") or {}
    pc = meta.get("processor_check") or {}
    if pc.get("image_seq_len") is not None:
        return int(pc["image_seq_len"])
    pcfg = _json(folder, "processor_config.json") or {}
    return int(pcfg.get("image_seq_len", cfg.image_seq_len))


def run_processor(folder, cfg=None, square_unsplit=None):
    """Processor on the folder's photos + prompt expansion. Returns dict (pixel_values, pixel_attention_mask,
    rows, cols, input_ids, prompt) or None when the folder names no photos and no prompt."""
    from PIL import Image
    proc, pc, names = folder_processor(folder, square_unsplit)
    if not names and pc.get("prompt") is None:
        return None
    out = {}
    if names:
        imgs = []
        for n in names:
            with Image.open(os.path.join(folder, n)) as im:
                im.load()
                imgs.append(im.copy())
        out = proc(imgs)
    if pc.get("prompt") is not None:
        cfg = cfg or load_config(folder)
        specials, nl, bos = folder_specials(folder)
        text = pc["prompt"]
        if names:
            text = expand_prompt(text, out["rows"], out["cols"], folder_image_seq_len(folder, cfg))
        out["prompt"] = text
        out["input_ids"] = np.array([tokenize(text, specials, nl, bos)], dtype=np.int64)
    return out


def run_folder(folder, n_new=8, check_recompute=True):
    cfg = load_config(folder)
    W, _ = load_weights(folder)
    model = Idefics3(W, cfg)
    ids = _npy(folder, "input_ids.npy")
    px = _npy(folder, "pixel_values.npy")
    pm = _npy(folder, "pixel_attention_mask.npy")
    if px is None or ids is None:
        pr = run_processor(folder, cfg)
        if pr is not None:
            if px is None and "pixel_values" in pr:
                px, pm = pr["pixel_values"], pr.get("pixel_attention_mask")
            if ids is None:
                ids = pr["input_ids"]
    return cfg, model.run(ids, px, pm, n_new=n_new, check_recompute=check_recompute)


TOLS = {"pixel_values": 0.0079, "vision_last_hidden_state": 1e-5, "connector_output": 1e-5, "logits": 1e-4}


def _compare(name, mine, ref, tol_key=None):
    mine = np.asarray(mine)
    if ref.shape != mine.shape:
        print(f"  {name:34s} shape {mine.shape} != reference {ref.shape}  FAIL")
        return False, None
    if ref.dtype.kind in "iub":
        same = bool((ref == mine).all())
        print(f"  {name:34s} {'exact match' if same else 'MISMATCH'}"
              + ("" if same or ref.size > 64 else f"  mine={mine.tolist()} ref={ref.tolist()}"))
        return same, 0.0 if same else None
    d = float(np.abs(ref.astype(np.float64) - mine.astype(np.float64)).max()) if ref.size else 0.0
    bound = TOLS.get(tol_key or name, 1e-5)
    print(f"  {name:34s} max|diff| = {d:.3e}  (<= {bound:g}: {'ok' if d <= bound else 'FAIL'})")
    return d <= bound, d


def check_folder(folder):
    ok, diffs = True, {}
    print(folder)
    cfg = load_config(folder)
    meta = _json(folder, "meta.json") or {}
    pr = run_processor(folder, cfg)
    if pr is not None:
        if "pixel_values" in pr:
            for name in ("pixel_values", "pixel_attention_mask"):
                ref = _npy(folder, name + ".npy")
                if ref is not None and name in pr:
                    r, d = _compare(name + " (processor)", pr[name], ref, tol_key=name)
                    ok &= r
                    diffs[name] = d
            rc = ((meta.get("notes") or {}).get("processor") or {}).get("rows_cols")
            if rc is None and meta.get("rows_cols") is not None:
                rc = meta["rows_cols"]
            if rc is not None:
                mine = [[r, c] for r, c in zip(pr["rows"], pr["cols"])]
                ref = [rc] if rc and not isinstance(rc[0], list) else rc
                same = mine == ref
                print(f"  {'rows/cols (processor)':34s} {'exact match' if same else 'MISMATCH'} {mine}")
                ok &= same
        ref = _npy(folder, "input_ids.npy")
        if ref is not None and "input_ids" in pr:
            r, d = _compare("input_ids (prompt expansion)", pr["input_ids"], ref)
            ok &= r
    gen_ref = _npy(folder, "generated_ids.npy")
    n_new = gen_ref.shape[-1] if gen_ref is not None else 8
    cfg, out = run_folder(folder, n_new)
    for name in ("vision_last_hidden_state", "connector_output", "logits", "generated_ids"):
        ref = _npy(folder, name + ".npy")
        if ref is None or name not in out:
            continue
        r, d = _compare(name, out[name], ref)
        ok &= r
        diffs[name] = d
    print(f"  min greedy margin {min(out['_gen_margins']):.4f}")
    return ok, diffs


def selftest(n_max=80):
    """Position-bucket emulation == torch for every (nps, nb) up to n_max; pixel-shuffle formula == HF."""
    bad = 0
    for nps in range(1, n_max):
        for nb in range(1, n_max):
            m = torch.zeros(1, nb, nb, dtype=torch.bool)
            m[:] = True
            t = bucket_position_ids(m, nps)[0].reshape(nb, nb)
            e = bucket_ids_emulated(nb, nps)
            if t[:, 0].tolist() != [x * nps for x in e] or t[0].tolist() != e:
                bad += 1
    print(f"  bucket emulation vs torch: {bad} mismatching (nps, nb) pairs of {(n_max - 1) ** 2}")
    g = torch.Generator().manual_seed(0)
    worst = 0.0
    for gsz, s in ((4, 2), (6, 2), (6, 3), (8, 4), (9, 3), (2, 2), (3, 3)):
        x = torch.randn(3, gsz * gsz, 5, generator=g)
        worst = max(worst, float((pixel_shuffle(x, s) - pixel_shuffle_formula(x, s)).abs().max()))
    print(f"  pixel_shuffle HF reshapes vs closed form: max|diff| {worst:.1e}")
    return bad == 0 and worst == 0.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="compare with the reference files in each folder")
    c.add_argument("dirs", nargs="+")
    r = sub.add_parser("run", help="run a folder's inputs and print / write the outputs")
    r.add_argument("dir")
    r.add_argument("--out")
    r.add_argument("--new-tokens", type=int, default=8)
    g = sub.add_parser("geometry", help="processor sizes for one image")
    g.add_argument("height", type=int)
    g.add_argument("width", type=int)
    g.add_argument("--longest-edge", type=int, default=4 * 364)
    g.add_argument("--tile", type=int, default=364)
    g.add_argument("--no-split", action="store_true")
    sub.add_parser("selftest")
    a = ap.parse_args(argv)
    if a.cmd == "check":
        ok = all([check_folder(d)[0] for d in a.dirs])
        print("ALL OK" if ok else "SOME FAILED")
        return 0 if ok else 1
    if a.cmd == "geometry":
        print(json.dumps(geometry(a.height, a.width, a.longest_edge, a.tile, not a.no_split)))
        return 0
    if a.cmd == "selftest":
        ok = selftest()
        print("SELFTEST OK" if ok else "SELFTEST FAILED")
        return 0 if ok else 1
    cfg, out = run_folder(a.dir, a.new_tokens)
    for name, v in sorted(out.items()):
        if not name.startswith("_"):
            print(f"{name}: shape {v.shape} dtype {v.dtype}")
    print("generated_ids:", out["generated_ids"].tolist())
    print(f"min greedy margin {min(out['_gen_margins']):.4f}")
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        for name, v in out.items():
            if not name.startswith("_"):
                np.save(os.path.join(a.out, name + ".npy"), v)
    return 0


if __name__ == "__main__":
    sys.exit(main())
