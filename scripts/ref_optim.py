#!/usr/bin/python3
"""Writes tests/data/optim/: golden optimizer trajectories from torch.optim (SGD, AdamW), torch's LambdaLR with the
Hugging Face warmup schedules (the lambdas of transformers.optimization, restated here because Debian has no
transformers) and torch.nn.utils.clip_grad_norm_, on small random tensors with a fixed gradient sequence.
tests/train/test_optim_ref.cpp replays every case with iris::train and compares.

Run with Debian's /usr/bin/python3 (torch 1.13, numpy), not the pyenv python3 on PATH:

    /usr/bin/python3 scripts/ref_optim.py [--out tests/data/optim]

Files (all little-endian .npy):
  init.<param>.npy             (shape) float32     the starting values
  grads.<param>.npy            (T, *shape) float32 the gradient of every step, before clipping
  <case>.param.<param>.npy     (shape) float32     the values after T steps
  <case>.exp_avg.<param>.npy, <case>.exp_avg_sq.<param>.npy, <case>.momentum_buffer.<param>.npy
                               (shape) float32     the optimizer state after T steps
  <case>.lr.npy                (T,) float64        the learning rate each step ran with
  <case>.grad_norm.npy         (T,) float64        clip_grad_norm_'s return value (cases that clip)
  cases.json                   every case's settings, the parameter names, shapes and decay flags
"""
import argparse
import json
import math
import os

import numpy as np
import torch

STEPS = 7
# name, shape, decay (no decay on norms and biases, as iris's default)
PARAMS = [
    ("layer.weight", (33, 67), True),  # 2211 elements: not a multiple of any vector width
    ("layer.bias", (67,), False),
    ("norm.weight", (37,), False),
    ("proj.weight", (5, 9), True),
]
# Per-step gradient scales: the total norm of a unit-variance draw over ~2.3k elements is ~48, so with
# max_norm = 1 some steps clip and some do not.
GRAD_SCALE = [0.005, 0.03, 0.01, 0.05, 0.002, 0.02, 0.012]


# The Hugging Face schedule lambdas (transformers/optimization.py), step counted from 0.
def hf_constant_with_warmup(warmup):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1.0, warmup))
        return 1.0
    return f


def hf_linear_with_warmup(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return f


def hf_cosine_with_warmup(warmup, total, num_cycles=0.5):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress)))
    return f


CASES = [
    # SGD without momentum, weight decay on the decay tensors only, constant lr.
    dict(name="sgd", optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.01, decay_all=False,
         schedule="constant", warmup=0, total=STEPS, max_norm=0.0),
    # SGD with momentum and weight decay, linear warmup + decay, clipping.
    dict(name="sgd_momentum", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.02, decay_all=False,
         schedule="linear", warmup=2, total=STEPS + 1, max_norm=1.0),
    # AdamW, decay on the decay tensors, cosine warmup schedule, clipping.
    dict(name="adamw_cosine", optimizer="adamw", lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
         decay_all=False, schedule="cosine", warmup=2, total=STEPS + 1, max_norm=1.0),
    # AdamW, other betas and eps, decay on every tensor, linear warmup schedule, no clipping.
    dict(name="adamw_linear", optimizer="adamw", lr=3e-3, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05,
         decay_all=True, schedule="linear", warmup=3, total=STEPS, max_norm=0.0),
    # AdamW with a constant schedule, no weight decay.
    dict(name="adamw_constant", optimizer="adamw", lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.0,
         decay_all=False, schedule="constant", warmup=0, total=STEPS, max_norm=0.0),
]


def schedule_lambda(case):
    if case["schedule"] == "constant":
        return hf_constant_with_warmup(case["warmup"])
    if case["schedule"] == "linear":
        return hf_linear_with_warmup(case["warmup"], case["total"])
    return hf_cosine_with_warmup(case["warmup"], case["total"])


def run_case(case, init, grads, out):
    params = {n: torch.nn.Parameter(torch.from_numpy(init[n].copy())) for n, _, _ in PARAMS}
    decay = [params[n] for n, _, d in PARAMS if d or case["decay_all"]]
    no_decay = [params[n] for n, _, d in PARAMS if not (d or case["decay_all"])]
    groups = [dict(params=decay, weight_decay=case["weight_decay"])]
    if no_decay:
        groups.append(dict(params=no_decay, weight_decay=0.0))
    if case["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=case["lr"], momentum=case["momentum"])
    else:
        opt = torch.optim.AdamW(groups, lr=case["lr"], betas=(case["beta1"], case["beta2"]), eps=case["eps"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule_lambda(case))
    lrs, norms = [], []
    for t in range(STEPS):
        for n, _, _ in PARAMS:
            params[n].grad = torch.from_numpy(grads[n][t].copy())
        if case["max_norm"] > 0:
            ordered = [params[n] for n, _, _ in PARAMS]
            norms.append(float(torch.nn.utils.clip_grad_norm_(ordered, case["max_norm"])))
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    prefix = os.path.join(out, case["name"])
    for n, _, _ in PARAMS:
        p = params[n]
        np.save(f"{prefix}.param.{n}.npy", p.detach().numpy())
        for key, value in opt.state[p].items():
            if key != "step" and value is not None:
                np.save(f"{prefix}.{key}.{n}.npy", value.numpy())
    np.save(f"{prefix}.lr.npy", np.array(lrs, dtype=np.float64))
    if norms:
        np.save(f"{prefix}.grad_norm.npy", np.array(norms, dtype=np.float64))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "optim"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(20240601)
    init, grads = {}, {}
    for n, shape, _ in PARAMS:
        init[n] = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal((STEPS,) + shape).astype(np.float32)
        for t in range(STEPS):
            g[t] *= np.float32(GRAD_SCALE[t])
        grads[n] = g
        np.save(os.path.join(args.out, f"init.{n}.npy"), init[n])
        np.save(os.path.join(args.out, f"grads.{n}.npy"), grads[n])
    for case in CASES:
        run_case(case, init, grads, args.out)
    meta = dict(torch=torch.__version__, steps=STEPS,
                params=[dict(name=n, shape=list(s), decay=d) for n, s, d in PARAMS], cases=CASES)
    with open(os.path.join(args.out, "cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
