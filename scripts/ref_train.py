#!/usr/bin/python3
"""Independent reference for iris training: LLaVA-1.5 / Llama loss, gradients and optimizer steps with torch
autograd and torch.optim, over the plain-torch model of scripts/ref_llava.py (which reproduces the refcases to
1e-5). tests/train/test_train_parity.cpp replays every case with iris::train and compares.

Run with Debian's /usr/bin/python3 (torch 1.13, numpy), not the pyenv python3 on PATH:

    /usr/bin/python3 scripts/ref_train.py [--refcases ../shared/refcases] [--shapes tests/data/shapes]
                                          [--out tests/data/train]

The example: the case's input_ids and pixel_values; labels = -100 everywhere except the last SUPERVISED positions
(= the ids there). Loss: Hugging Face's, F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100), the mean over
supervised tokens. Weight decay, when used, applies to every trained tensor.

Cases on the shared `llava` refcase (float32 safetensors, HF / PEFT names):
  llava_sgd_stage1.safetensors    SGD lr 0.5, one step, the projector trained
  llava_sgd_stage2.safetensors    SGD lr 0.5, one step, projector + the whole decoder
  llava_adamw_stage1.safetensors  AdamW (lr 1e-2, betas 0.9/0.999, eps 1e-8, wd 0.01) 3 steps on the same example,
                                  the projector trained
  llava_adamw_lora.safetensors    the same AdamW, projector trained fully + LoRA (rank 4, alpha 8, no dropout) on
                                  every decoder linear (q,k,v,o,gate,up,down); A initialised here (PEFT's
                                  kaiming-uniform bound, torch.Generator seed 1234), B zeros
  llava_lora_init.safetensors     those initial A (and B) tensors
  llava_adamw_stage3.safetensors  the same AdamW at stage 3: everything LLaVA runs (the vision embeddings,
                                  pre_layrnorm and the layers below the feature layer, the projector, the decoder)
  The SGD and stage-1 AdamW references run in float32 (torch's float32 result is within 4e-6 of float64's there).
  Three AdamW steps that move the decoder (LoRA) or everything (stage 3) are ill-conditioned in float32: Adam divides
  by sqrt(v) per element, so elements whose gradients are small or cancel across steps amplify rounding, and
  torch's own float32 trajectory ends up to 1.5e-3 (relative to the tensor's largest entry) from the exact one,
  although its gradients are within 2e-6 (of each tensor's largest) of the exact ones. Those references therefore
  run in float64 (stored rounded to float32), and meta.json gives per tensor how far torch's float32 run lands from
  them: "dev32" = max |w32 - w64|, and "upd32" = |w32 - w64|_2 / |w64 - w_start|_2 (the error relative to the
  update).
grads.json: one backward with everything trained (stage 3; the decoder only for text-only models) on the llava
  refcase and every shape case (tests/data/shapes/*): the loss and, per tensor, the gradient's sum, L2 norm,
  max |g| and 16 probe values (flat indices chosen here).
meta.json: the settings, the losses of every step, the supervised-token count, dev32 / upd32 of the float64 cases.
"""
import argparse
import contextlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ref_llava as R  # noqa: E402

torch.set_grad_enabled(True)  # ref_llava turns autograd off at import

SUPERVISED = 8
SGD_LR = 0.5
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
ADAMW_STEPS = 3
LORA_RANK, LORA_ALPHA, LORA_SEED = 4, 8.0, 1234
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# LoRA adapters by module prefix: {prefix: (A, B, scale)}, consulted by the patched linear below.
LORA = {}
_base_linear = R.linear


def _lora_linear(x, W, prefix, bias):
    """nn.Linear plus PEFT's LoRA term scale * (x A^T) B^T where an adapter is attached (dropout 0)."""
    y = _base_linear(x, W, prefix, bias)
    if prefix in LORA:
        A, B, s = LORA[prefix]
        y = y + ((x @ A.t()) @ B.t()) * s
    return y


R.linear = _lora_linear  # ref_llava's classes look `linear` up at call time


@contextlib.contextmanager
def float64_model():
    """Lets ref_llava's model run in float64: it casts pixels to float32 for the convolution and asks softmax for
    float32 (as HF does); both are patched to follow the weights' dtype."""
    conv, softmax = F.conv2d, torch.softmax
    F.conv2d = lambda x, w, **k: conv(x.to(w.dtype), w, **k)
    torch.softmax = lambda x, dim, dtype=None: softmax(x, dim)
    try:
        yield
    finally:
        F.conv2d, torch.softmax = conv, softmax


def labels_for(ids):
    ids = [int(i) for i in ids]
    return [-100] * (len(ids) - SUPERVISED) + ids[-SUPERVISED:]


def loss_of(arch, cfg, W, ids, px):
    """HF's causal-LM loss: mean cross-entropy of logits[t] against labels[t+1] over supervised tokens."""
    if arch == "llava":
        model = R.Llava(W, cfg)
        rows = model.image_features(px)["projector_output"] if px is not None else None
        emb = model.embed_prompt(ids, rows)
        lm = model.lm
    else:
        lm = R.Llama(W, cfg, "model.", "lm_head.weight")
        emb = lm.embed(ids)
    logits, _ = lm.forward(emb, None, 0)
    labels = torch.tensor(labels_for(ids), dtype=torch.int64)
    return F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="mean")


def trained_names(arch, cfg, W, stage):
    """The tensors iris trains for a stage: LLaVA runs the vision layers below the feature layer only."""
    names = []
    for n in sorted(W):
        if arch == "llama":
            names.append(n)
            continue
        if n.startswith("multi_modal_projector."):
            names.append(n)
        elif n.startswith("language_model.") and stage >= 2:
            names.append(n)
        elif n.startswith("vision_tower.") and stage >= 3:
            p = "vision_tower.vision_model."
            if n.startswith(p + "encoder.layers."):
                il = int(n[len(p + "encoder.layers."):].split(".")[0])
                if il < cfg.feature_index():
                    names.append(n)
            elif n.startswith(p + "embeddings.") or n.startswith(p + "pre_layrnorm."):
                names.append(n)
    return names


def load_case(folder, dtype=torch.float32):
    arch, cfg = R.load_config(folder)
    W, _ = R.load_weights(folder)
    W = {k: v.clone().to(dtype) for k, v in W.items()}
    ids = [int(i) for i in np.load(os.path.join(folder, "input_ids.npy")).reshape(-1)]
    pxf = os.path.join(folder, "pixel_values.npy")
    px = torch.from_numpy(np.load(pxf)).to(dtype) if os.path.exists(pxf) else None
    return arch, cfg, W, ids, px


def run(folder, names, opt_fn, steps, lora=False, dtype=torch.float32):
    """Trains `names` (and LoRA adapters when asked) for `steps` steps; returns (tensors, losses, lora_init)."""
    arch, cfg, W, ids, px = load_case(folder, dtype)
    params = []
    for n in names:
        W[n].requires_grad_(True)
        params.append(W[n])
    LORA.clear()
    lora_init, lora_params = {}, {}
    if lora:
        g = torch.Generator().manual_seed(LORA_SEED)
        s = LORA_ALPHA / LORA_RANK
        for il in range(cfg.text.num_hidden_layers):
            for t in LORA_TARGETS:
                sub = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
                prefix = f"language_model.model.layers.{il}.{sub}.{t}"
                out_f, in_f = W[prefix + ".weight"].shape
                bound = 1.0 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) on (r, in)
                A = ((torch.rand(LORA_RANK, in_f, generator=g, dtype=torch.float64) * 2 - 1) * bound).float()
                B = torch.zeros(out_f, LORA_RANK)
                key = "base_model.model." + prefix
                lora_init[key + ".lora_A.weight"] = A.clone()
                lora_init[key + ".lora_B.weight"] = B.clone()
                A = A.to(dtype).requires_grad_(True)
                B = B.to(dtype).requires_grad_(True)
                LORA[prefix] = (A, B, s)
                lora_params[key + ".lora_A.weight"] = A
                lora_params[key + ".lora_B.weight"] = B
                params += [A, B]
    opt = opt_fn(params)
    losses = []
    with float64_model() if dtype == torch.float64 else contextlib.nullcontext():
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_of(arch, cfg, W, ids, px)
            loss.backward()
            for n in names:
                if W[n].grad is None:
                    raise RuntimeError(f"{folder}: {n} got no gradient")
            losses.append(float(loss))
            opt.step()
    out = {n: W[n].detach().clone() for n in names}
    out.update({k: v.detach().clone() for k, v in lora_params.items()})
    LORA.clear()
    return out, losses, lora_init


def dev32(ref64, run32):
    """Per tensor: max |float32 run - float64 run|."""
    return {n: float((run32[n].double() - ref64[n].double()).abs().max()) for n in ref64}


def upd32(ref64, run32, start):
    """Per tensor: |float32 run - float64 run|_2 / |float64 update|_2."""
    return {n: float((run32[n].double() - ref64[n].double()).norm() / (ref64[n].double() - start[n].double()).norm())
            for n in ref64}


def shape_case_grads(folder):
    """One backward with everything trained; per-tensor gradient summaries."""
    arch, cfg, W, ids, px = load_case(folder)
    names = trained_names(arch, cfg, W, 3)
    for n in names:
        W[n].requires_grad_(True)
    loss = loss_of(arch, cfg, W, ids, px)
    loss.backward()
    rng = np.random.default_rng(7)
    summary = {}
    for n in names:
        g = W[n].grad
        if g is None:
            raise RuntimeError(f"{folder}: {n} got no gradient")
        flat = g.reshape(-1).double()
        idx = sorted(set(rng.integers(0, flat.numel(), size=16).tolist()))
        summary[n] = {"sum": float(flat.sum()), "norm": float(flat.norm()), "max_abs": float(flat.abs().max()),
                      "probe_index": idx, "probe_value": [float(flat[i]) for i in idx]}
    return {"loss": float(loss), "supervised": SUPERVISED, "grads": summary}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refcases", default=os.path.join(here, "..", "..", "shared", "refcases"))
    ap.add_argument("--shapes", default=os.path.join(here, "..", "tests", "data", "shapes"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "train"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    llava = os.path.join(a.refcases, "llava")
    arch, cfg, W, ids, _ = load_case(llava)
    meta = {"case": "refcases/llava", "supervised": SUPERVISED, "labels": labels_for(ids), "sgd_lr": SGD_LR,
            "adamw": {"lr": ADAMW["lr"], "betas": list(ADAMW["betas"]), "eps": ADAMW["eps"],
                      "weight_decay": ADAMW["weight_decay"], "steps": ADAMW_STEPS, "decay_every_tensor": True},
            "lora": {"rank": LORA_RANK, "alpha": LORA_ALPHA, "dropout": 0.0, "targets": list(LORA_TARGETS),
                     "components": ["llm"], "init_seed": LORA_SEED},
            "cases": {}}
    sgd = lambda p: torch.optim.SGD(p, lr=SGD_LR)  # noqa: E731
    adamw = lambda p: torch.optim.AdamW(p, **ADAMW)  # noqa: E731
    plans = [("llava_sgd_stage1", 1, sgd, 1, False, False), ("llava_sgd_stage2", 2, sgd, 1, False, False),
             ("llava_adamw_stage1", 1, adamw, ADAMW_STEPS, False, False),
             ("llava_adamw_lora", 1, adamw, ADAMW_STEPS, True, True),
             ("llava_adamw_stage3", 3, adamw, ADAMW_STEPS, False, True)]
    for name, stage, opt_fn, steps, lora, f64 in plans:
        names = trained_names(arch, cfg, W, stage)
        out, losses, lora_init = run(llava, names, opt_fn, steps, lora)
        entry = {"stage": stage, "steps": steps, "losses": losses, "tensors": sorted(out), "reference": "float32"}
        if f64:  # ill-conditioned in float32: the reference is the float64 run
            out64, losses64, _ = run(llava, names, opt_fn, steps, lora, torch.float64)
            start = {n: W[n] for n in names}
            start.update(lora_init)
            entry.update(reference="float64", losses=losses64, losses_float32=losses, dev32=dev32(out64, out),
                         upd32=upd32(out64, out, start))
            out = {n: v.float() for n, v in out64.items()}
        R.write_safetensors(os.path.join(a.out, name + ".safetensors"), out)
        if lora_init:
            R.write_safetensors(os.path.join(a.out, "llava_lora_init.safetensors"), lora_init)
        meta["cases"][name] = entry
        print(f"{name}: {len(out)} tensors, losses {['%.7f' % l for l in entry['losses']]}")
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")

    grads = {"refcases/llava": shape_case_grads(llava)}
    print(f"refcases/llava: loss {grads['refcases/llava']['loss']:.7f}, {len(grads['refcases/llava']['grads'])} tensors")
    for case in sorted(os.listdir(a.shapes)):
        folder = os.path.join(a.shapes, case)
        if os.path.exists(os.path.join(folder, "config.json")):
            grads["shapes/" + case] = shape_case_grads(folder)
            print(f"shapes/{case}: loss {grads['shapes/' + case]['loss']:.7f}, "
                  f"{len(grads['shapes/' + case]['grads'])} tensors")
    with open(os.path.join(a.out, "grads.json"), "w") as f:
        json.dump(grads, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
