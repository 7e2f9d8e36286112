#!/usr/bin/python3
"""Independent reference for training Qwen2-VL / Qwen2.5-VL with iris: the loss and every parameter's gradient from
torch autograd over the plain-torch model of scripts/ref_qwen2_vl.py (written from transformers; it reproduces the
inference cases of tests/data/qwen2_vl to 2e-5), in float64. tests/train/test_qwen2_vl_train.cpp replays each case
with iris::train (stage 3: vision tower, merger and decoder all trained) and compares.

Run with Debian's /usr/bin/python3 (torch 1.13, numpy), not the pyenv python3 on PATH:

    /usr/bin/python3 scripts/ref_qwen2_vl_train.py [--cases tests/data/qwen2_vl] [--out tests/data/qwen2_vl_train]
                                                   [CASE ...]

Each output folder tests/data/qwen2_vl_train/<case>/ refers to the inference case folder for the model and the
inputs (meta.json "source": the folder, relative to the repository root; config.json, model.safetensors,
pixel_values.npy, image_grid_thw.npy, input_ids.npy are read from there) and holds:
  labels.npy             int64 (1, S): -100 everywhere except the supervised positions, where it is the id there.
                         Supervised: the last LAST_TEXT non-image tokens and the non-image tokens at positions 1, 2
                         and right after each <|vision_end|>; never an image token (position 0 cannot be a target).
  loss.npy               float64 (1,): HF's causal-LM loss with reduction SUM: sum over t of the cross-entropy of
                         logits[t] against labels[t + 1] (label -100 ignored).
  grads.safetensors      F32: d loss / d parameter for every tensor of the checkpoint, under its Hugging Face name
                         (tied embeddings: model.embed_tokens.weight carries both the input and the output use).
  loss_after_step.npy    float64 (1,): the same summed loss after one plain SGD step w -= SGD_LR * grad (every
                         parameter, no momentum, no weight decay) taken with the gradient above.
  meta.json              the source folder, the supervised positions and their count, the settings, the losses,
                         and per parameter group the largest |grad| (for the report).

The whole computation is float64 (the weights and pixel values are cast exactly; the rotary angle tables stay
float32 as transformers computes them). ref_qwen2_vl's model casts the pixels to float32 for the patch convolution
and asks softmax for float32 (as HF does): both are patched here to follow the weights' dtype.
"""
import argparse
import contextlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_qwen2_vl as Q  # noqa: E402

torch.set_grad_enabled(True)  # ref_qwen2_vl turns autograd off at import

CASES = ("qwen2vl_gqa2_mrope233", "qwen25vl_window")
LAST_TEXT = 6
SGD_LR = 0.1
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextlib.contextmanager
def float64_model():
    conv, softmax = F.conv3d, torch.softmax
    F.conv3d = lambda x, w, *a, **k: conv(x.to(w.dtype), w, *a, **k)
    torch.softmax = lambda x, dim, dtype=None: softmax(x, dim)
    try:
        yield
    finally:
        F.conv3d, torch.softmax = conv, softmax


def labels_for(ids, cfg):
    """The supervised positions (see the module docstring) and the labels row."""
    S = len(ids)
    text = [t for t in range(S) if ids[t] != cfg.image_token_id]
    chosen = set(text[-LAST_TEXT:])
    for t in (1, 2):
        if t in text:
            chosen.add(t)
    for t in range(S - 1):
        if ids[t] == cfg.vision_end_token_id and ids[t + 1] != cfg.image_token_id:
            chosen.add(t + 1)
    chosen.discard(0)
    labels = [-100] * S
    for t in chosen:
        labels[t] = int(ids[t])
    return labels, sorted(chosen)


def load_case(folder):
    cfg = Q.load_config(folder)
    W32, _ = Q.load_weights(folder)
    ids = [int(i) for i in np.load(os.path.join(folder, "input_ids.npy")).reshape(-1)]
    px = np.load(os.path.join(folder, "pixel_values.npy"))
    grid = np.load(os.path.join(folder, "image_grid_thw.npy")).reshape(-1, 3)
    return cfg, W32, ids, px, grid


def summed_loss(cfg, W, ids, px, grid, labels):
    """HF's loss with reduction sum over the float64 model; also the logits (S, V)."""
    model = Q.Qwen2VL(W, cfg)
    rows = model.vision.forward(px, grid)["output"]
    emb = model.embed_prompt(ids, rows)
    pos, _ = Q.get_rope_index(ids, grid, cfg)
    logits = model.lm.forward(emb, pos)
    lab = torch.tensor(labels, dtype=torch.int64)
    return F.cross_entropy(logits[:-1], lab[1:], ignore_index=-100, reduction="sum"), logits


def group_of(name):
    if name.startswith("visual.merger."):
        return "merger"
    if name.startswith("visual.patch_embed."):
        return "vision_patch_embed"
    if name.startswith("visual."):
        return "vision_blocks"
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        return "embeddings_head"
    return "decoder"


def run_case(case_dir, out_dir):
    cfg, W32, ids, px, grid = load_case(case_dir)
    labels, chosen = labels_for(ids, cfg)
    W = {k: v.clone().to(torch.float64).requires_grad_(True) for k, v in W32.items()}
    with float64_model():
        loss, logits = summed_loss(cfg, W, ids, px, grid, labels)
        loss.backward()
        # the float64 model against the case's float32 golden logits (a check of this script's driving)
        ref_logits = np.load(os.path.join(case_dir, "logits.npy")).reshape(logits.shape)
        dlog = float(np.abs(logits.detach().numpy() - ref_logits).max())
        grads = {}
        for k, v in W.items():
            if v.grad is None:
                raise RuntimeError(f"{k}: no gradient (not used by the model?)")
            grads[k] = v.grad.detach().clone()
        with torch.no_grad():
            W2 = {k: (v - SGD_LR * grads[k]).detach() for k, v in W.items()}
        loss2, _ = summed_loss(cfg, W2, ids, px, grid, labels)
    os.makedirs(out_dir, exist_ok=True)
    np.save(os.path.join(out_dir, "labels.npy"), np.array([labels], dtype=np.int64))
    np.save(os.path.join(out_dir, "loss.npy"), np.array([float(loss)], dtype=np.float64))
    np.save(os.path.join(out_dir, "loss_after_step.npy"), np.array([float(loss2)], dtype=np.float64))
    Q.write_safetensors(os.path.join(out_dir, "grads.safetensors"), {k: g.float() for k, g in grads.items()})
    groups = {}
    for k, g in grads.items():
        gname = group_of(k)
        groups[gname] = max(groups.get(gname, 0.0), float(g.abs().max()))
    meta = {
        "source": os.path.relpath(os.path.abspath(case_dir), REPO),
        "reference": "scripts/ref_qwen2_vl_train.py: torch autograd over scripts/ref_qwen2_vl.py in float64",
        "loss": "sum over supervised t of CE(logits[t], labels[t + 1]), labels -100 ignored",
        "supervised_positions": chosen,
        "supervised": len(chosen),
        "sgd_lr": SGD_LR,
        "sgd": "w -= sgd_lr * d(summed loss)/dw on every parameter, no momentum, no weight decay",
        "loss_value": float(loss),
        "loss_after_step_value": float(loss2),
        "float64_vs_golden_logits_max_abs_diff": dlog,
        "max_abs_grad_by_group": groups,
        "parameters": len(grads),
    }
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"{os.path.basename(case_dir)}: {len(chosen)} supervised {chosen}, loss {float(loss):.10g}, after one SGD "
          f"step {float(loss2):.10g}, {len(grads)} gradients, float64 logits vs golden {dlog:.2e}")
    for gname, m in sorted(groups.items()):
        print(f"  max|grad| {gname:20s} {m:.4e}")
    return dlog


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--cases-dir", default=os.path.join(REPO, "tests", "data", "qwen2_vl"))
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data", "qwen2_vl_train"))
    a = ap.parse_args(argv)
    worst = 0.0
    for c in a.cases:
        worst = max(worst, run_case(os.path.join(a.cases_dir, c), os.path.join(a.out, c)))
    if worst > 1e-4:  # the golden logits are float32 from the same model: it must reproduce them
        print(f"float64 logits differ from the golden ones by {worst:.2e} (> 1e-4)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
