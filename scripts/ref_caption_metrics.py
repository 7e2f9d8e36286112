#!/usr/bin/python3
"""Golden values for tests/eval/test_metrics.cpp: corpus BLEU-1..4 and CIDEr-D as the coco-caption toolkit defines
them, written again here from the definitions (the toolkit itself is not packaged in Debian), independently of the
C++ code. Run with Debian's /usr/bin/python3; it prints the numbers the test holds as constants.

BLEU (coco-caption bleu_scorer, option "closest"): per hypothesis, n-gram counts clipped by the largest count in
any one reference; the reference length closest to the hypothesis length (ties: the shorter); corpus sums of
clipped matches and of hypothesis n-grams; BLEU-n = (prod_{k<=n} (match_k + 1e-15) / (total_k + 1e-9))^(1/n),
times exp(1 - R/C) when C < R.

CIDEr-D (coco-caption cider_scorer, vrama91's CIDEr-D): document frequency of each n-gram = number of images whose
reference set contains it; weight = tf * (log(#images) - log(max(1, df))); per order n = 1..4 the clipped cosine
sum_g min(h_g, r_g) * r_g / (|h| |r|) (0 when a norm is 0), times exp(-(Lh - Lr)^2 / (2 * 6^2)) where L counts the
sentence's bigram occurrences (the toolkit's quirk); mean over orders, mean over references, times 10; corpus score
= mean over images.
"""
import math
from collections import Counter


def grams(sentence, n):
    w = sentence.split()
    return Counter(tuple(w[i:i + n]) for i in range(len(w) - n + 1))


def bleu(hyps, refs):
    match = [0] * 4
    total = [0] * 4
    c_len = r_len = 0
    for h, rs in zip(hyps, refs):
        hl = len(h.split())
        lens = sorted(len(r.split()) for r in rs)
        best = min(lens, key=lambda l: (abs(l - hl), l))
        c_len += hl
        r_len += best
        for n in range(1, 5):
            hc = grams(h, n)
            clip = Counter()
            for r in rs:
                for g, c in grams(r, n).items():
                    clip[g] = max(clip[g], c)
            match[n - 1] += sum(min(c, clip[g]) for g, c in hc.items())
            total[n - 1] += max(0, hl - n + 1)
    out = []
    for n in range(1, 5):
        logp = sum(math.log((match[k] + 1e-15) / (total[k] + 1e-9)) for k in range(n))
        b = math.exp(logp / n)
        ratio = (c_len + 1e-15) / (r_len + 1e-9)
        if ratio < 1:
            b *= math.exp(1 - 1 / ratio)
        out.append(b)
    return out


def cider_d(hyps, refs, sigma=6.0):
    n_img = len(refs)
    df = Counter()
    for rs in refs:
        seen = set()
        for r in rs:
            for n in range(1, 5):
                seen.update(grams(r, n).keys())
        df.update(seen)

    def vector(sentence):
        vec, norm = [], []
        for n in range(1, 5):
            v = {g: tf * (math.log(n_img) - math.log(max(1.0, df[g]))) for g, tf in grams(sentence, n).items()}
            vec.append(v)
            norm.append(math.sqrt(sum(x * x for x in v.values())))
        length = sum(grams(sentence, 2).values())
        return vec, norm, length

    scores = []
    for h, rs in zip(hyps, refs):
        hv, hn, hl = vector(h)
        acc = 0.0
        for r in rs:
            rv, rn, rl = vector(r)
            pen = math.exp(-((hl - rl) ** 2) / (2 * sigma * sigma))
            per_order = []
            for n in range(4):
                s = sum(min(x, rv[n].get(g, 0.0)) * rv[n].get(g, 0.0) for g, x in hv[n].items())
                if hn[n] != 0 and rn[n] != 0:
                    s /= hn[n] * rn[n]
                per_order.append(s * pen)
            acc += sum(per_order) / 4
        scores.append(acc / len(rs) * 10)
    return sum(scores) / len(scores), scores


BLEU_HYPS = ["a red circle and a blue square", "two yellow stars"]
BLEU_REFS = [["a red circle and a green square", "one red circle next to a blue square"],
             ["two yellow stars on a grey background", "there are two yellow stars"]]

CIDER_HYPS = ["a red circle and a blue square", "two yellow stars", "a small green triangle on the left"]
CIDER_REFS = [["a red circle and a green square", "one red circle next to a blue square",
               "a blue square and a red circle"],
              ["two yellow stars on a grey background", "there are two yellow stars"],
              ["a green triangle", "a small green triangle on the left of the image", "green triangle left"]]

if __name__ == "__main__":
    print("bleu", ["%.12f" % b for b in bleu(BLEU_HYPS, BLEU_REFS)])
    mean, per = cider_d(CIDER_HYPS, CIDER_REFS)
    print("cider %.12f" % mean, ["%.12f" % s for s in per])
