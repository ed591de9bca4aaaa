"""Chapter 13's checkers: check_cross_attention and check_width pass right answers, written several ways, and name
each typical mistake."""
import math

import pytest
import torch
import torch.nn.functional as F

from minidiff.captions import width
from minidiff.exercises.ch13_text import check_cross_attention, check_width

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------ cross-attention
def attention_masked_fill(x, context, mask, w_q, w_k, w_v):
    q, k, v = x @ w_q, context @ w_k, context @ w_v                      # (B, N, d), (B, L, d), (B, L, d)
    scores = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])              # (B, N, L)
    return scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1) @ v


def attention_sdpa(x, context, mask, w_q, w_k, w_v):
    return F.scaled_dot_product_attention(x @ w_q, context @ w_k, context @ w_v, attn_mask=mask[:, None, :])


def attention_loops(x, context, mask, w_q, w_k, w_v):
    """One batch element and one query at a time, the padding dropped instead of masked."""
    out = torch.empty(x.shape[0], x.shape[1], w_v.shape[1], dtype=x.dtype)
    for b in range(x.shape[0]):
        tokens = context[b][mask[b]]                                     # (real tokens, D)
        k, v = tokens @ w_k, tokens @ w_v
        for n in range(x.shape[1]):
            q = x[b, n] @ w_q                                            # (d,)
            weights = torch.softmax(k @ q / w_k.shape[1] ** 0.5, dim=0)
            out[b, n] = weights @ v
    return out


def attention_large_negative(x, context, mask, w_q, w_k, w_v):
    """A large negative number instead of -inf, and einsum: exp(-1e9) is 0 in any float dtype."""
    q, k, v = x @ w_q, context @ w_k, context @ w_v
    scores = torch.einsum("bnd,bld->bnl", q, k) * w_q.shape[1] ** -0.5
    scores = scores + (~mask[:, None, :]).to(x.dtype) * -1e9
    return torch.einsum("bnl,bld->bnd", scores.softmax(-1), v)


@pytest.mark.parametrize("right", [attention_masked_fill, attention_sdpa, attention_loops, attention_large_negative])
def test_cross_attention_right_answers_pass(right):
    result = check_cross_attention(right)
    assert result, result.message


def attention_with(*, scale=None, mask_mode="fill", axis=-1, swap=False):
    def fn(x, context, mask, w_q, w_k, w_v):
        q, k, v = x @ w_q, context @ w_k, context @ w_v
        if swap:
            k, v = v, k
        s = q @ k.transpose(1, 2)
        s = s / (math.sqrt(k.shape[-1]) if scale is None else scale(x, k))
        m = mask[:, None, :]
        if mask_mode == "fill":
            s = s.masked_fill(~m, float("-inf"))
        elif mask_mode == "inverted":
            s = s.masked_fill(m, float("-inf"))
        elif mask_mode == "added":
            s = s + m
        elif mask_mode == "large":
            s = s.masked_fill(~m, -1e9)
        weights = s.softmax(axis)
        if mask_mode == "after":
            weights = weights * m
        return weights @ v
    return fn


@pytest.mark.parametrize("wrong, hint", [
    (attention_with(scale=lambda x, k: 1.0), "you did not scale them"),
    (attention_with(scale=lambda x, k: k.shape[-1]), "not by d"),
    (attention_with(scale=lambda x, k: math.sqrt(x.shape[-1])), "not of the input width"),
    (attention_with(mask_mode="none"), "the mask is not applied"),
    (attention_with(mask_mode="inverted"), "the mask is inverted"),
    (attention_with(mask_mode="after"), "after the softmax"),
    (attention_with(mask_mode="added"), "you added the mask as numbers"),
    (attention_with(mask_mode="large", axis=-2), "the softmax runs over the queries"),
    (attention_with(axis=-2), "not finite"),
    (attention_with(swap=True), "keys and values are swapped"),
    (lambda x, c, m, wq, wk, wv: attention_masked_fill(x, c, m, wq, wk, wv).transpose(1, 2), "(B, N, d)"),
    (lambda x, c, m, wq, wk, wv: attention_masked_fill(x, c, m, wq, wk, wv).float(), "keep the inputs' dtype"),
    (lambda x, c, m, wq, wk, wv: 1.01 * attention_masked_fill(x, c, m, wq, wk, wv), "off by up to"),
    (lambda x, c, m, wq, wk, wv: attention_masked_fill(x, c, m, wq, wk, wv).tolist(), "return a tensor"),
    (lambda x, c, m, wq, wk, wv: 1 / 0, "raised ZeroDivisionError"),
])
def test_cross_attention_mistakes_are_named(wrong, hint):
    result = check_cross_attention(wrong)
    assert not result
    assert hint in result.message, result.message


def test_cross_attention_checker_ignores_padding_only_when_it_should():
    """Attention that ignores the padding is the one right answer: the padded context is loud in the checker."""
    assert check_cross_attention(attention_masked_fill, seed=3)
    assert not check_cross_attention(attention_with(mask_mode="none"), seed=3)


# ------------------------------------------------------------------------------------------ width
def width_loops(images):
    out = []
    for image in images:
        garment = (image[0] + 1) / 2 > 0.05                              # (28, 28)
        rows = [float(row.float().mean()) for row in garment if bool(row.any())]
        out.append(sum(rows) / len(rows) if rows else 0.0)
    return torch.tensor(out)


def width_counts(images):
    garment = ((images + 1) / 2 > 0.05).squeeze(1)                       # (N, 28, 28)
    per_row = garment.sum(2)                                             # (N, 28) columns covered
    rows = (per_row > 0).sum(1)
    return torch.where(rows > 0, per_row.sum(1) / (28 * rows.clamp(min=1)), torch.zeros(()))


@pytest.mark.parametrize("right", [width, width_loops, width_counts, lambda x: width(x).double()])
def test_width_right_answers_pass(right):
    result = check_width(right)
    assert result, result.message


def coverage(garment):
    covered = garment.squeeze(1).float().mean(2)
    return covered.sum(1) / (covered > 0).sum(1).clamp(min=1)


@pytest.mark.parametrize("wrong, hint", [
    (lambda x: ((x + 1) / 2 > 0.05).squeeze(1).float().mean((1, 2)), "divided by all 28 rows"),
    (lambda x: coverage((x + 1) / 2 > 0), "with > 0 every faint background pixel counts"),
    (lambda x: coverage(x > 0.05), "compare (x + 1) / 2 with 0.05, not x itself"),
    (lambda x: coverage(x > 0), "x > 0 is half the range"),
    (lambda x: ((x + 1) / 2 > 0.05).squeeze(1).float().mean(2).max(1).values, "the widest row"),
    (lambda x: coverage(((x + 1) / 2 > 0.05).transpose(2, 3)), "you measured the columns"),
    (lambda x: (lambda c: c.sum(1) / (c > 0).sum(1))(((x + 1) / 2 > 0.05).squeeze(1).float().mean(2)), "gives NaN"),
    (lambda x: width(x)[:, None], "a tensor of shape (30,)"),
    (lambda x: width(x) * 1.1, "width 1.1, expected 1 (its garment covers 784 pixels)"),
    (lambda x: width(x).tolist(), "return a tensor"),
    (lambda x: x.reshape(5), "raised RuntimeError"),
])
def test_width_mistakes_are_named(wrong, hint):
    result = check_width(wrong)
    assert not result
    assert hint in result.message, result.message


def width_extent(images):
    """The plausible wrong width: each row's extent, (rightmost - leftmost + 1) / 28, gaps included."""
    garment = ((images + 1) / 2 > 0.05).squeeze(1)                       # (N, 28, 28)
    cols = torch.arange(28)
    rows = garment.any(2)                                                # (N, 28)
    right = torch.where(garment, cols, -1).max(2).values
    left = torch.where(garment, cols, 28).min(2).values
    extent = torch.where(rows, (right - left + 1) / 28, torch.zeros(()))
    return extent.sum(1) / rows.sum(1).clamp(min=1)


def width_extent_loops(images):
    out = []
    for image in images:
        garment = (image[0] + 1) / 2 > 0.05
        rows = [row.nonzero().flatten() for row in garment if bool(row.any())]
        out.append(sum(float(r[-1] - r[0] + 1) / 28 for r in rows) / len(rows) if rows else 0.0)
    return torch.tensor(out)


@pytest.mark.parametrize("extent", [width_extent, width_extent_loops])
def test_width_extent_is_rejected_with_its_hint(extent):
    """On one run of garment per row extent and width agree; the checker's trousers and sandals tell them apart."""
    result = check_width(extent)
    assert not result
    assert "leftmost to its rightmost garment pixel" in result.message, result.message
    assert "width counts the garment's pixels in the row" in result.message, result.message


def test_width_checker_has_gaps_in_rows():
    """Some constructed images (the trousers and sandals) have rows whose extent exceeds their coverage by a lot."""
    from minidiff.exercises.ch13_text import _garments

    for dtype in (torch.float32, torch.float64):
        x = _garments(torch.Generator().manual_seed(0), dtype)
        assert int(((width_extent(x) - width(x)).abs() > 0.05).sum()) >= 4
        assert check_width(width), "the correct answer still passes"


def test_width_checker_images_separate_the_thresholds():
    """The constructed images hold faint specks, empty rows and pixels on both sides of x = 0 and x = 0.05."""
    from minidiff.exercises.ch13_text import _garments

    x = _garments(torch.Generator().manual_seed(0), torch.float64)
    v = (x + 1) / 2
    assert bool(((v > 0) & (v < 0.05)).any()) and bool(((v > 0.5) & (v < 0.525)).any())
    assert bool(((v > 0.05) & (v < 0.5)).any())
    assert float(width(x[-1:])) == 0.0 and float(width(x[-2:-1])) == 1.0
