"""Chapter 13, text prompts: the checkers of masked cross-attention and of the width attribute.

Introduced in chapter 13.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ._harness import CheckResult

# ------------------------------------------------------------------------------------------ cross-attention
# (B, N queries of width C, L tokens of width D, key width d, dtype): C and D differ from d, so that scaling by
# the wrong width is seen, and every prompt has real tokens and padding.
ATTENTION_CASES = ((3, 16, 8, 6, 5, 4, torch.float64), (2, 49, 12, 8, 10, 16, torch.float64),
                   (4, 9, 6, 5, 7, 3, torch.float32))


def _scores(x, context, w_q, w_k):
    return (x @ w_q) @ (context @ w_k).transpose(1, 2)                    # (B, N, L)


def _attend(scores, mask, values):
    """softmax over the tokens of the scores with -inf at the padding, times the values: (B, N, d)."""
    return scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1) @ values


def _cross_attention(x, context, mask, w_q, w_k, w_v):
    """The package's attention: F.scaled_dot_product_attention, as CrossAttention calls it, with one head."""
    q, k, v = x @ w_q, context @ w_k, context @ w_v                       # (B, N, d), (B, L, d), (B, L, d)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, :])      # (B, N, d)


def _attention_mistakes(x, context, mask, w_q, w_k, w_v):
    d, C = w_k.shape[1], x.shape[-1]
    s = _scores(x, context, w_q, w_k)                                     # (B, N, L), unscaled
    v = context @ w_v
    pad = ~mask[:, None, :]
    return [
        ("the scores must be divided by sqrt(d), the keys' width: softmax(q k^T / sqrt(d)); you did not scale them",
         lambda: _attend(s, mask, v)),
        ("divide the scores by sqrt(d), not by d", lambda: _attend(s / d, mask, v)),
        (f"divide by the square root of the keys' width d = w_k.shape[1] = {d}, not of the input width "
         f"C = x.shape[-1] = {C}", lambda: _attend(s / math.sqrt(C), mask, v)),
        ("the padding is attended to: the mask is not applied (set the scores of padded tokens to -inf before "
         "the softmax)", lambda: (s / math.sqrt(d)).softmax(-1) @ v),
        ("the mask is inverted: mask is True at the real tokens, so the scores of the tokens where it is False "
         "get -inf", lambda: _attend(s / math.sqrt(d), ~mask, v)),
        ("you zeroed the padded weights after the softmax, so the others no longer sum to 1: put -inf in the "
         "scores before the softmax", lambda: ((s / math.sqrt(d)).softmax(-1) * mask[:, None, :]) @ v),
        ("you added the mask as numbers (1 at real tokens, 0 at padding): padding needs -inf, e.g. "
         "scores.masked_fill(~mask, float('-inf'))", lambda: (s / math.sqrt(d) + mask[:, None, :]).softmax(-1) @ v),
        ("the softmax runs over the queries (dim=-2): each query's weights over the tokens (the last axis) must "
         "sum to 1", lambda: (s / math.sqrt(d)).masked_fill(pad, -1e9).softmax(-2) @ v),
        ("keys and values are swapped: the scores compare q with the keys context @ w_k, and the weights average "
         "the values context @ w_v", lambda: _attend(_scores(x, context, w_q, w_v) / math.sqrt(d), mask,
                                                     context @ w_k)),
    ]


def _attention_inputs(case, gen):
    B, N, C, L, D, d, dtype = case
    r = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    x, context = r(B, N, C), r(B, L, D)
    w_q, w_k, w_v = r(C, d) / math.sqrt(C), r(D, d) / math.sqrt(D), r(D, d) / math.sqrt(D)   # unit-size scores
    lengths = torch.randint(1, L, (B,), generator=gen)                    # 1 to L - 1 real tokens
    mask = torch.arange(L)[None, :] < lengths[:, None]                    # (B, L), True at real tokens
    context = torch.where(mask[..., None], context, 5 * context)          # loud padding: it must not matter
    return [a.to(dtype) for a in (x, context)], mask, [w.to(dtype) for w in (w_q, w_k, w_v)]


def check_cross_attention(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(x, context, mask, w_q, w_k, w_v) -> out``: one head of masked cross-attention,
    softmax(q k^T / sqrt(d) + M) v with q = x w_q, k = context w_k, v = context w_v and M = -inf at padding.

    ``x`` is (B, N, C), the N query positions (a feature map's pixels, flattened); ``context`` (B, L, D), the
    token vectors; ``mask`` (B, L) bool, True at real tokens and False at padding; ``w_q`` (C, d), ``w_k`` and
    ``w_v`` (D, d). The result is (B, N, d), compared with ``F.scaled_dot_product_attention`` as
    :class:`~minidiff.unet.CrossAttention` calls it (Vaswani et al. 2017, eq. 1). Introduced in chapter 13.
    """
    name = "check_cross_attention"
    gen = torch.Generator().manual_seed(seed)
    for case in ATTENTION_CASES:
        (x, context), mask, (w_q, w_k, w_v) = _attention_inputs(case, gen)
        B, N, _, L, _, d, dtype = case
        try:
            out = fn(x.clone(), context.clone(), mask.clone(), w_q.clone(), w_k.clone(), w_v.clone())
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn raised {type(e).__name__}: {e}")
        if not torch.is_tensor(out):
            return CheckResult(name, False, f"return a tensor, got {type(out).__name__}")
        if out.shape != (B, N, d):
            return CheckResult(name, False, f"return one vector of width d per query, (B, N, d) = {(B, N, d)}; got "
                                            f"{tuple(out.shape)} (queries come from x, keys and values from context)")
        if out.dtype != dtype:
            return CheckResult(name, False, f"keep the inputs' dtype {dtype}, got {out.dtype}")
        args = [a.double() for a in (x, context)], [w.double() for w in (w_q, w_k, w_v)]
        right = _cross_attention(args[0][0], args[0][1], mask, *args[1])
        got = out.double()
        tol = (1e-10 if dtype == torch.float64 else 1e-4) * (1 + float(right.abs().max()))
        if bool(((got - right).abs() <= tol).all()):
            continue
        if not bool(torch.isfinite(got).all()):
            return CheckResult(name, False, "the result is not finite: a softmax over entries that are all -inf "
                                            "gives NaN. Take the softmax over the tokens (the last axis, dim=-1), "
                                            "where every prompt has a real token; over the queries a padded token's "
                                            "column is all -inf")
        for hint, wrong in _attention_mistakes(args[0][0], args[0][1], mask, *args[1]):
            if bool(((got - wrong()).abs() <= tol).all()):
                return CheckResult(name, False, hint)
        err = float((got - right).abs().max())
        return CheckResult(name, False, f"B={B}, N={N}, L={L}, d={d} ({dtype}): off by up to {err:.3g} (largest "
                                        f"value {float(right.abs().max()):.3g})")
    return CheckResult(name, True, f"matches masked scaled dot-product attention on {len(ATTENTION_CASES)} cases, "
                                   "float64 and float32")


# ------------------------------------------------------------------------------------------ the width attribute
def _width(images):
    from ..captions import width

    return width(images)


def _coverage(garment):
    """Mean over the rows that hold any garment of the fraction of the row's columns it covers: (N,)."""
    covered = garment.squeeze(1).double().mean(2)                         # (N, 28)
    return covered.sum(1) / (covered > 0).sum(1).clamp(min=1)


EXTENT_HINT = ("you measured each row's extent, from its leftmost to its rightmost garment pixel: width counts the "
               "garment's pixels in the row (the gap between a trouser's legs or a sandal's straps is not garment), "
               "as a fraction of the 28 columns")


def _extent(garment):
    """The plausible wrong width: (rightmost - leftmost + 1) / 28 of each row, averaged like the coverage."""
    g = garment.squeeze(1)                                                # (N, 28, 28)
    cols = torch.arange(g.shape[-1], dtype=torch.float64)
    right = torch.where(g, cols, -1.0).amax(2)                            # (N, 28), -1 in an empty row
    left = torch.where(g, cols, float(g.shape[-1])).amin(2)
    extent = ((right - left + 1) / g.shape[-1]).clamp(min=0)              # (N, 28), 0 in an empty row
    return extent.sum(1) / g.any(2).sum(1).clamp(min=1)


def _width_mistakes(images):
    x = images.double()
    v = (x + 1) / 2
    garment = v > 0.05                                                    # (N, 1, 28, 28)
    covered = garment.squeeze(1).double().mean(2)                         # (N, 28)
    return [
        ("you divided by all 28 rows (that is the fraction of the whole image the garment covers): average the "
         "coverage over the rows that hold any garment only", lambda: covered.mean(1)),
        ("the garment is where (x + 1) / 2 > 0.05, 5% of the range: with > 0 every faint background pixel counts",
         lambda: _coverage(v > 0)),
        ("compare (x + 1) / 2 with 0.05, not x itself: images are in [-1, 1], so x > 0.05 keeps only the bright "
         "half", lambda: _coverage(x > 0.05)),
        ("x > 0 is half the range: the garment is where (x + 1) / 2 > 0.05", lambda: _coverage(x > 0)),
        ("that is the widest row (max); width is the mean coverage over the rows with garment",
         lambda: covered.max(1).values),
        ("you measured the columns (a height): a row's coverage is the fraction of its 28 columns the garment covers",
         lambda: _coverage(garment.transpose(2, 3))),
        (EXTENT_HINT, lambda: _extent(garment)),
    ]


def _runs(v, row, runs, gen):
    """Fill ``runs``, a list of (left, right) column ranges, of ``row`` of ``v`` with intensities 0.06 to 1."""
    for left, right in runs:
        v[row, left:right] = 0.06 + 0.94 * torch.rand(right - left, generator=gen, dtype=torch.float64)


def _trouser(v, gen):
    """A waistband, then two legs with a gap between them (several columns wide) in each row."""
    r = lambda a, b: int(torch.randint(a, b, (1,), generator=gen))
    top, band, legs, left = r(0, 4), r(2, 5), r(12, 20), r(4, 9)
    leg, gap = r(3, 7), r(2, 6)
    for row in range(top, min(28, top + band + legs)):
        if row < top + band:
            _runs(v, row, [(left, left + 2 * leg + gap)], gen)
        else:
            spread = (row - top - band) // 6                              # the legs part towards the hem
            a, b = max(0, left - spread), min(28, left + leg + gap + spread)
            _runs(v, row, [(a, a + leg), (b, min(28, b + leg))], gen)


def _sandal(v, gen):
    """Straps: two to four short runs with gaps in each upper row, then a sole of one run."""
    r = lambda a, b: int(torch.randint(a, b, (1,), generator=gen))
    top, height, left = r(8, 14), r(6, 10), r(0, 5)
    for row in range(top, min(28, top + height)):
        if row >= top + height - 2:
            _runs(v, row, [(left, min(28, left + r(18, 24)))], gen)      # the sole
            continue
        runs, col = [], left + r(0, 3)
        for _ in range(r(2, 5)):
            length = r(1, 4)
            if col + length > 28:
                break
            runs.append((col, col + length))
            col += length + r(1, 5)                                       # a gap of 1 to 4 columns
        _runs(v, row, runs, gen)


N_GARMENTS = 30


def _garments(gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Images (30, 1, 28, 28) in [-1, 1]: irregular garments (intensities 0.06 to 1, a third of them in the
    band 0.48 to 0.56 around x = 0), faint background specks (intensity 0.01 to 0.04), empty rows above and
    below. Images 0 to 21 hold one run of garment per row; 22 to 27 have gaps inside their rows (three
    trousers with two legs, three sandals with straps), so that a row's extent is not its width; the last
    image is empty, the one before it full. Every value is exact in float32 and far from 0.05."""
    n, n_gapped = N_GARMENTS, 6
    v = torch.zeros(n, 28, 28, dtype=torch.float64)
    for i in range(n - 2 - n_gapped):
        top, height = int(torch.randint(0, 10, (1,), generator=gen)), int(torch.randint(6, 17, (1,), generator=gen))
        for row in range(top, min(28, top + height)):
            left = int(torch.randint(0, 12, (1,), generator=gen))
            right = left + int(torch.randint(2, 28 - left + 1, (1,), generator=gen))
            _runs(v[i], row, [(left, right)], gen)
    for i in range(n - 2 - n_gapped, n - 2):
        (_trouser if i < n - 2 - n_gapped // 2 else _sandal)(v[i], gen)
    for i in range(n - 2):
        band = (v[i] > 0) & (torch.rand(28, 28, generator=gen) < 1 / 3)
        v[i][band] = 0.48 + 0.08 * torch.rand(int(band.sum()), generator=gen, dtype=torch.float64)
    specks = (v == 0) & (torch.rand(n, 28, 28, generator=gen) < 0.15)
    v[specks] = 0.01 + 0.03 * torch.rand(int(specks.sum()), generator=gen, dtype=torch.float64)
    v[n - 2] = 0.3 + 0.6 * torch.rand(28, 28, generator=gen, dtype=torch.float64)
    v[n - 1] = 0.0
    x = (2 * v - 1).to(torch.float32).to(dtype)                           # exact in float32
    return x[:, None]                                                     # (30, 1, 28, 28)


def check_width(fn: Callable, *, seed: int = 0) -> CheckResult:
    """Check ``fn(images) -> widths``: the width attribute of :func:`minidiff.captions.width` for images
    (N, 1, 28, 28) in [-1, 1], a tensor (N,): the garment is where (x + 1) / 2 > 0.05, and the width is the mean,
    over the rows that hold any garment, of the fraction of the row's 28 columns it covers (0 for an empty image).
    A row's coverage counts its garment pixels, so gaps (between a trouser's legs, a sandal's straps) do not
    count; some of the test images have them. Introduced in chapter 13.
    """
    name = "check_width"
    gen = torch.Generator().manual_seed(seed)
    for dtype in (torch.float32, torch.float64):
        images = _garments(gen, dtype)
        try:
            out = fn(images.clone())
        except Exception as e:                                   # noqa: BLE001 - the learner's code
            return CheckResult(name, False, f"fn raised {type(e).__name__}: {e}")
        if not torch.is_tensor(out):
            return CheckResult(name, False, f"return a tensor, got {type(out).__name__}")
        n = images.shape[0]
        if out.shape != (n,):
            return CheckResult(name, False, f"return one width per image, a tensor of shape ({n},); got "
                                            f"{tuple(out.shape)}")
        right = _width(images).double()
        got = out.double()
        if bool(((got - right).abs() <= 1e-5).all()):
            continue
        if bool(got[:-1].isfinite().all()) and not bool(got[-1].isfinite()):
            return CheckResult(name, False, "the empty image (no garment at all) gives NaN: 0 rows hold garment. Count "
                                            "the rows with .clamp(min=1), so that an empty image has width 0")
        for hint, wrong in _width_mistakes(images):
            w = wrong()
            if bool(((got[:-1] - w[:-1]).abs() <= 1e-5).all()):      # the empty image may be NaN in a mistake
                return CheckResult(name, False, hint)
        k = int((got - right).nan_to_num(nan=10.0).abs().argmax())
        return CheckResult(name, False, f"image {k}: width {float(got[k]):.6g}, expected {float(right[k]):.6g} "
                                        f"(its garment covers {int(((images[k] + 1) / 2 > 0.05).sum())} pixels)")
    return CheckResult(name, True, f"matches minidiff.captions.width on {2 * N_GARMENTS} constructed images, float32 "
                                   "and float64, gaps in rows and an empty image included")
