"""The fast paths give the plain path's answer: every piece of :mod:`minidiff.fast` (the U-Net's blocks, the
upsampling convolution as a transposed one, SiLU and dropout on the CPU, channels-last weights, channels-last
kernels in the fused AdamW, the schedule on the device), batched guidance and the compiled model for the sampler
loops. Values and gradients, in both memory layouts. Speed itself is measured by ``benchmarks/bench.py``, never
asserted here."""
import json
import math
import os

import pytest
import torch

import minidiff as md
from benchmark_scripts import benchmark_module
from minidiff import schedules
from minidiff.guidance import guided_eps
from minidiff.fast import CompiledModel
from minidiff import fast
from minidiff.fast import (FastDropout, FastResBlock, FastSelfAttention, FastUpsample, _silu, upsample_conv,
                           upsample_conv_transposed)
from minidiff.unet import ResBlock, SelfAttention, UNet, Upsample

pytestmark = pytest.mark.usefixtures("one_thread")


def _random_unet(seed: int = 0, **kw) -> UNet:
    """A small U-Net with every parameter random (the zero-initialised layers too), in eval mode."""
    model = UNet(**{**dict(base_channels=16, channel_mults=(1, 2), attention_levels=(False, True)), **kw})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


# ---------------------------------------------------------------------------------------- schedules
def test_gather_matches_plain_indexing(linear, gen):
    t = torch.randint(0, linear.T, (7,), generator=gen(0))
    like = torch.zeros(7, 3, 4, 4)
    out = schedules.gather(linear.alpha_bars, t, like)
    assert out.shape == (7, 1, 1, 1) and out.dtype == torch.float32
    assert torch.equal(out.flatten(), linear.alpha_bars.float()[t])
    out64 = schedules.gather(linear.alpha_bars, t, like.double())
    assert torch.equal(out64.flatten(), linear.alpha_bars[t])           # same dtype and device: no copy at all


def test_schedule_on_the_cpu_is_the_schedule_itself_and_elsewhere_a_copy_of_every_tensor(linear):
    assert fast.schedule_on(linear, "cpu") is linear
    moved = fast.schedule_on(linear, "meta")                            # a device without data: shapes and dtypes
    assert isinstance(moved, md.NoiseSchedule) and moved.T == linear.T and moved.name == linear.name
    for name in ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "snr", "posterior_variance",
                 "posterior_mean_coef_x0", "posterior_mean_coef_xt"):
        value = getattr(moved, name)
        assert value.device.type == "meta" and value.dtype == torch.float64 and value.shape == (linear.T,), name
        assert getattr(linear, name).device.type == "cpu", name        # the original is untouched
    with pytest.raises(TypeError, match="sched must be a NoiseSchedule"):
        fast.schedule_on("linear", "cpu")


def test_gather_works_with_a_schedule_built_in_inference_mode():
    with torch.inference_mode():
        sched = md.NoiseSchedule.linear(T=10)
    out = schedules.gather(sched.alpha_bars, torch.tensor([0, 9]), torch.zeros(2, 3))
    assert torch.equal(out.flatten(), sched.alpha_bars.float()[[0, 9]])


# ---------------------------------------------------------------------------------------- batched guidance
def test_batched_guidance_equals_two_calls_on_a_unet(gen):
    """One call on 2B rows vs the conditional and unconditional calls, in float64 (rounding-level agreement)."""
    model = _random_unet(num_classes=3).double()
    x_t = torch.randn(4, 1, 8, 8, generator=gen(0), dtype=torch.float64)
    t = torch.tensor([1, 300, 600, 999])
    y = torch.tensor([0, 2, 1, 3])                                       # 3 = "no label" is allowed too
    for s in (0.0, 3.0):
        two_calls = md.cfg_combine(model(x_t, t, None), model(x_t, t, y), s)
        # float64: a batch of 8 may block the convolutions' sums (<= 9 * 64 terms) unlike a batch of 4: ~sqrt(576)
        # eps64 = 5e-15 of the terms' scale per layer, ~1e-13 at the worst, inside 1e-12
        torch.testing.assert_close(guided_eps(model, x_t, t, y, s), two_calls, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------- apply: the U-Net
def _forward_and_grads(model, x, t, y):
    out = model(x, t, y)
    out.square().mean().backward()
    return out.detach(), [p.grad for p in model.parameters()]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("scale_shift", [True, False])
def test_fast_unet_matches_the_plain_one_forward_and_gradients(channels_last, scale_shift, gen):
    """``fast.apply`` (fast blocks; channels-last weights on the CPU) computes the plain U-Net's function, with NCHW
    or channels-last inputs. float32 convolutions in another layout and kernel: rounding-level agreement, relative
    to the outputs' and gradients' own scale (the tolerance of one float32 reduction over a few hundred terms)."""
    plain = _random_unet(num_classes=10, num_res_blocks=2, scale_shift=scale_shift).train()
    model = fast.apply(_random_unet(num_classes=10, num_res_blocks=2, scale_shift=scale_shift).train())
    assert {type(m) for m in model.modules()} >= {FastResBlock, FastSelfAttention, FastUpsample}
    assert any(p.ndim == 4 and not p.is_contiguous() for p in model.parameters())     # channels-last kernels
    x = torch.randn(3, 1, 16, 16, generator=gen(0))
    t, y = torch.tensor([5, 500, 995]), torch.tensor([1, 10, 4])
    want, want_grads = _forward_and_grads(plain, x, t, y)
    x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    got, got_grads = _forward_and_grads(model, x_in, t, y)
    # 1e-5 of the scale is 84 eps32, 1e-4 relative 840 eps32 (measured: 10% of that on AVX-512, AVX2 and no SIMD)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * want.abs().max().item())
    for (name, _), g, w in zip(plain.named_parameters(), got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * w.abs().max().item(), msg=name)


def test_apply_keeps_the_weights_and_revert_restores_the_plain_model(gen):
    model = _random_unet(num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast.apply(model)
    assert set(model.state_dict()) == set(before)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    fast.revert(model)
    assert not any(type(m).__name__.startswith("Fast") for m in model.modules())
    assert all(p.is_contiguous() for p in model.parameters())
    assert isinstance(fast.apply(md.MLPDenoiser()), md.MLPDenoiser)      # another model: left as it is
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fast.apply(lambda x, t, y=None: x)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("scale_shift", [True, False])
def test_fast_resblock_matches_the_plain_one_in_float64(channels_last, scale_shift, gen):
    """The in-place additions and SiLU change no value: float64, values and every gradient (input included)."""
    plain = ResBlock(8, 16, 12, dropout=0.0, num_groups=4, scale_shift=scale_shift).double()
    with torch.no_grad():
        for p in plain.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen(1), dtype=torch.float64))
    block = fast.apply(ResBlock(8, 16, 12, dropout=0.0, num_groups=4, scale_shift=scale_shift).double())
    block.load_state_dict(plain.state_dict())
    assert type(block) is FastResBlock
    x = torch.randn(2, 8, 5, 6, generator=gen(0), dtype=torch.float64)
    emb = torch.randn(2, 12, generator=gen(2), dtype=torch.float64)
    results = []
    for module, layout in ((plain, torch.contiguous_format), (block, torch.channels_last if channels_last
                                                               else torch.contiguous_format)):
        xi = x.contiguous(memory_format=layout).requires_grad_()
        out = module(xi, emb)
        grads = torch.autograd.grad(out.square().sum(), [xi, *module.parameters()])
        results.append((out.detach(), grads))
        with torch.no_grad():                                            # the in-place SiLU path (no autograd)
            results[-1] += (module(x.contiguous(memory_format=layout), emb),)
    (out_a, grads_a, nograd_a), (out_b, grads_b, nograd_b) = results
    # float64, the same operations but convolutions in another layout (another summation order over <= 144 terms):
    # ~1e-14 of values ~3 and gradients ~75
    torch.testing.assert_close(out_b, out_a, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nograd_b, nograd_a, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(b, a, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("cls", [SelfAttention, FastSelfAttention])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("ch", [32, 64])                                 # one head, two heads of 32 channels
def test_attention_matches_the_formula(cls, channels_last, ch, gen):
    """softmax(q k^T / sqrt(d)) v per head, written out: the plain block and the fast one, whichever kernel the
    layout selects, values and gradients."""
    attn = cls(ch, num_groups=8).double()
    with torch.no_grad():
        attn.proj.weight.copy_(0.1 * torch.randn(attn.proj.weight.shape, generator=gen(1), dtype=torch.float64))
    x = torch.randn(2, ch, 4, 6, generator=gen(0), dtype=torch.float64)
    B, C, H, W = x.shape
    qkv = attn.qkv(attn.norm(x)).reshape(B, 3, attn.heads, C // attn.heads, H * W)   # (B, 3, nh, hd, HW)
    q, k, v = qkv.unbind(dim=1)                                                      # (B, nh, hd, HW) each
    weights = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(C // attn.heads), dim=-1)   # (B, nh, HW, HW)
    h = (v @ weights.transpose(-1, -2)).reshape(B, C, H, W)                          # (B, C, H, W)
    expected = x + attn.proj(h)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        attn, x = attn.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = attn(x)
    # float64, the same formula through other kernels (SDPA, another layout): ~1e-15 relative; 1e-10 is generous
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert out.is_contiguous(memory_format=layout)                      # the input's layout, kept
    g = torch.randn(out.shape, generator=gen(2), dtype=torch.float64)
    x_ref = x.detach().contiguous().requires_grad_()
    ref = SelfAttention(ch, num_groups=8).double()
    ref.load_state_dict(attn.state_dict())
    want = torch.autograd.grad(ref(x_ref), [x_ref, *ref.parameters()], g)
    got = torch.autograd.grad(out, [x, *attn.parameters()], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------- upsampling
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_upsample_conv_transposed_is_upsample_then_conv(channels_last, bias, gen):
    """A stride-2 transposed convolution with the folded 4x4 kernel = nearest x2 then a 3x3 convolution: values
    and all three gradients, in float64, on a non-square image with different input and output widths."""
    x = torch.randn(2, 3, 5, 7, generator=gen(0), dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3, generator=gen(1), dtype=torch.float64).requires_grad_()
    b = torch.randn(4, generator=gen(2), dtype=torch.float64).requires_grad_() if bias else None
    x.requires_grad_()
    g = torch.randn(2, 4, 10, 14, generator=gen(3), dtype=torch.float64)
    expected = upsample_conv(x, w, b)
    expected_grads = torch.autograd.grad(expected, [x, w] + ([b] if bias else []), g)
    out = upsample_conv_transposed(x, w, b)
    grads = torch.autograd.grad(out, [x, w] + ([b] if bias else []), g)
    assert out.shape == (2, 4, 10, 14)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # float64: the folded 4x4 kernel (sums of 3x3 weights) forms each output from other products, and the weight
    # gradients sum 2 * 10 * 14 positions in another order: ~1e-14 of values up to 33
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_plain_upsample_is_nearest_x2_then_the_3x3_conv(gen):
    up = Upsample(3).double()
    x = torch.randn(2, 3, 4, 5, generator=gen(0), dtype=torch.float64)
    torch.testing.assert_close(up(x), upsample_conv(x, up.conv.weight, up.conv.bias), rtol=0, atol=0)  # the same ops
    assert up(x).shape == (2, 3, 8, 10)


def test_upsample_takes_the_transposed_path_for_large_enough_cpu_inputs(monkeypatch):
    calls = []
    monkeypatch.setattr(fast, "upsample_conv_transposed",
                        lambda *a: calls.append("transposed") or upsample_conv(*a))
    up = fast.apply(Upsample(4))
    side = FastUpsample.TRANSPOSED_MIN_SIDE
    batch = -(-FastUpsample.TRANSPOSED_MIN_PIXELS // side ** 2)         # the fewest images that reach the bar
    for shape, taken in (((batch - 1, 4, side, side), False),           # too few pixels
                         ((batch, 4, side, side), True),
                         ((4 * batch, 4, side - 1, side + 1), False)):  # enough pixels, too few rows
        calls.clear()
        up(torch.zeros(shape))
        assert calls == (["transposed"] if taken else []), shape


def test_unet_with_and_without_the_transposed_path_agrees(monkeypatch, gen):
    """A whole fast U-Net, forward and parameter gradients, with the transposed path forced on and forced off."""
    x = torch.randn(3, 1, 16, 16, generator=gen(0))
    t, y = torch.tensor([5, 500, 995]), torch.tensor([1, 10, 4])
    results = []
    for bar in (0, math.inf):
        monkeypatch.setattr(FastUpsample, "TRANSPOSED_MIN_PIXELS", bar)
        monkeypatch.setattr(FastUpsample, "TRANSPOSED_MIN_SIDE", 0)
        model = fast.apply(_random_unet(num_classes=10, num_res_blocks=2).train())
        out = model(x, t, y)
        out.square().mean().backward()
        results.append((out.detach(), [p.grad for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = results
    # float32: the two upsampling paths sum the same products in another order. Outputs (<= 0.22): 1e-6 is 39 eps32
    # of their scale; gradients (<= 0.023): 1e-6 is ~365 eps32 of theirs (measured: a few percent of either).
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_silu_runs_in_place_only_when_autograd_does_not_need_the_input(gen):
    x = torch.randn(5, generator=gen(0))
    expected = torch.nn.functional.silu(x)
    out = _silu(x)
    assert out is x and torch.equal(out, expected)                      # no gradient recorded: in place
    x = torch.randn(5, generator=gen(0), requires_grad=True)
    out = _silu(x)
    assert out is not x and torch.equal(out.detach(), expected)
    out.sum().backward()
    # float32, values O(1): a few ulps between two formulas; the float32 defaults (1.3e-6 relative, 1e-5) hold
    torch.testing.assert_close(x.grad, torch.sigmoid(x) * (1 + x * (1 - torch.sigmoid(x))))


def test_dropout_keeps_each_value_with_probability_1_minus_p_and_rescales_it(gen):
    p, n = 0.3, 200_000
    drop = FastDropout(p)
    x = (torch.rand(n, generator=gen(0)) + 0.5).requires_grad_()       # no zeros of its own
    torch.manual_seed(1)
    out = drop(x)
    kept = out != 0
    # Dropped fraction within 5 standard errors of p; kept values are x / (1 - p).
    assert abs((1 - kept.float().mean().item()) - p) < 5 * math.sqrt(p * (1 - p) / n)
    # x * (1 / (1 - p)) or x / (1 - p): within an ulp or two, inside the float32 defaults
    torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    out.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    torch.manual_seed(1)
    assert torch.equal(drop(x), out)                                     # seeded: the same mask again
    assert drop.eval()(x) is x and FastDropout(0.0)(x) is x
    unet = fast.apply(UNet(dropout=p))
    assert all(type(m) is FastDropout and m.p == p for m in unet.modules() if isinstance(m, torch.nn.Dropout))


# ---------------------------------------------------------------------------------------- compiled model
def test_compiled_model_samples_like_the_eager_model(small, gen):
    """The opt-in compiled path (graph capture through AOTAutograd; no CUDA graphs on the CPU) equals eager."""
    model = _random_unet(num_classes=3)
    fast = CompiledModel(model, backend="aot_eager")
    assert fast.num_classes == 3
    x_T = torch.randn(4, 1, 8, 8, generator=gen(0))
    y = torch.tensor([0, 1, 2, 0])
    # aot_eager runs the same aten kernels (measured bit-identical); a traced graph may still reorder elementwise
    # ops: a few ulps of the model output, magnified by x0_hat's 1 / sqrt(ab) <= 182 and relative to samples up to
    # ~600, far inside 1e-5
    for kw in (dict(), dict(y=y), dict(y=y, guidance_scale=2.0)):       # B rows, then 2B rows for guidance
        eager = md.ddim_sample(model, x_T.shape, small, steps=5, x_T=x_T, **kw)
        torch.testing.assert_close(md.ddim_sample(fast, x_T.shape, small, steps=5, x_T=x_T, **kw), eager,
                                   rtol=1e-5, atol=1e-5)
    short = md.NoiseSchedule.linear(T=8, beta_start=1e-3, beta_end=0.2)
    eager = md.ddpm_sample(model, x_T.shape, short, x_T=x_T, generator=gen(1))
    torch.testing.assert_close(md.ddpm_sample(fast, x_T.shape, short, x_T=x_T, generator=gen(1)), eager,
                               rtol=1e-5, atol=1e-5)


def test_compiled_model_returns_a_fresh_tensor_each_call(gen):
    """A CUDA graph reuses its output memory; the wrapper hands out copies, so earlier results stay valid."""
    fast = CompiledModel(_random_unet(), backend="eager")
    x = torch.randn(2, 1, 8, 8, generator=gen(0))
    first = fast(x, torch.tensor([1, 2]))
    kept = first.clone()
    second = fast(x, torch.tensor([900, 950]))
    assert torch.equal(first, kept) and not torch.equal(first, second)


def test_compiled_model_rejects_a_non_callable():
    with pytest.raises(TypeError, match="model must be callable"):
        CompiledModel(42)


@pytest.mark.skipif(os.environ.get("MINIDIFF_TEST_INDUCTOR") != "1",
                    reason="compiles C++ kernels (about a minute on a cold cache); set MINIDIFF_TEST_INDUCTOR=1")
def test_inductor_compiled_model_matches_eager(small, gen):
    model = _random_unet(num_classes=3)
    x_T = torch.randn(4, 1, 8, 8, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3])
    eager = md.ddim_sample(model, x_T.shape, small, steps=5, x_T=x_T, y=y, guidance_scale=2.0)
    fast = md.ddim_sample(CompiledModel(model), x_T.shape, small, steps=5, x_T=x_T, y=y, guidance_scale=2.0)
    # inductor fuses and reorders float32 reductions and uses its own vectorised exp/sigmoid: ~100 ulps of the model
    # output, magnified by x0_hat's 1 / sqrt(ab) <= 182: ~1e-5 relative
    torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------- the benchmark's records
def test_performance_page_is_generated_from_the_committed_results():
    report = benchmark_module("report")
    assert report.PAGE.read_text() == report.page(), "rerun: python benchmarks/report.py"


def test_benchmark_models_are_matched():
    """Same parameter count (the issue allows 10%) and the same forward FLOPs per image, for both sizes."""
    pytest.importorskip("diffusers")
    bench = benchmark_module("bench")
    cpu = torch.device("cpu")
    for size in bench.SIZES:
        d, m = (bench.build(size, lib, cpu) for lib in ("diffusers", "minidiff"))
        assert abs(md.n_params(m) / md.n_params(d) - 1) <= 0.10
        assert bench.forward_flops(m, size, cpu) == bench.forward_flops(d, size, cpu)


# ---------------------------------------------------------------------------------------- fused AdamW
@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_optimizer_is_fused_and_matches_the_reference_adamw(channels_last):
    from minidiff.train import TrainConfig, make_optimizer

    def run(make):
        model = _random_unet(num_classes=10)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = make(model)
        for step in range(3):
            x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(step))
            loss = model(x, torch.full((4,), 5), torch.arange(4)).square().mean()
            opt.zero_grad(), loss.backward(), opt.step()
        return opt, torch.cat([p.detach().flatten() for p in model.parameters()])

    config = TrainConfig(lr=1e-3, weight_decay=0.1)
    opt, fast = run(lambda m: make_optimizer(m, config, torch.device("cpu")))
    assert all(group["fused"] for group in opt.param_groups)
    _, slow = run(lambda m: torch.optim.AdamW(
        [{"params": [p for p in m.parameters() if p.ndim >= 2], "weight_decay": 0.1},
         {"params": [p for p in m.parameters() if p.ndim < 2], "weight_decay": 0.0}], lr=1e-3, foreach=False))
    # float32: the fused kernel rounds each update differently (an ulp of |p| per step; 1e-5 relative is 84 eps32).
    # The attention's key bias has exact gradient 0 (softmax ignores a shift shared by a row's logits), so float32
    # hands Adam rounding noise, <= 1e-12 here, which lr g / (|g| + 1e-8) turns into steps of up to 1e-7 that
    # differ between the two runs once their weights differ by an ulp: steps 2 and 3, two runs, up to ~4e-7.
    # Allow 1e-6 (a wrong rule is off by lr wd |p| ~ 3e-5 or lr = 1e-3 per step). 1e-7 failed without SIMD.
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-6)
    _, fused = run(lambda m: torch.optim.AdamW(
        [{"params": [p for p in m.parameters() if p.ndim >= 2], "weight_decay": 0.1},
         {"params": [p for p in m.parameters() if p.ndim < 2], "weight_decay": 0.0}], lr=1e-3, fused=True))
    assert torch.equal(fast, fused)                           # the same kernel on the same numbers, bit for bit


def _adam_steps(model, opt, steps: int, seed: int = 0):
    for step in range(steps):
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed + step))
        loss = model(x, torch.full((4,), 5), torch.arange(4)).square().mean()
        opt.zero_grad(), loss.backward(), opt.step()


def test_channels_last_kernels_reach_the_fused_update_without_a_copy():
    """torch's fused AdamW copies non-contiguous tensors first; minidiff's hands it contiguous views instead."""
    from torch.profiler import profile

    from minidiff.fast import AdamW
    model = _random_unet(num_classes=10).to(memory_format=torch.channels_last)
    assert any(p.ndim == 4 and not p.is_contiguous() for p in model.parameters())
    for make, copies in ((lambda ps: torch.optim.AdamW(ps, fused=True), True), (lambda ps: AdamW(ps, fused=True), False)):
        opt = make(model.parameters())
        _adam_steps(model, opt, 1)
        with profile() as prof:
            opt.step()
        assert any(e.name == "aten::clone" for e in prof.events()) == copies


def test_adamw_is_plain_torch_adamw_when_init_group_names_other_lists(monkeypatch):
    """A torch whose ``_init_group`` has other parameter names: no views, the same steps as torch's AdamW."""
    import inspect

    from minidiff.fast import AdamW
    P = inspect.Parameter
    monkeypatch.setattr(AdamW, "_SIGNATURE", inspect.Signature(
        [P("self", P.POSITIONAL_OR_KEYWORD), P("group", P.POSITIONAL_OR_KEYWORD), P("lists", P.VAR_POSITIONAL)]))
    models = [_random_unet(num_classes=10).to(memory_format=torch.channels_last) for _ in range(2)]
    opts = [AdamW(models[0].parameters(), fused=True), torch.optim.AdamW(models[1].parameters(), fused=True)]
    for m, opt in zip(models, opts):
        _adam_steps(m, opt, 2)
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)
    from torch.profiler import profile
    with profile() as prof:
        opts[0].step()
    assert any(e.name == "aten::clone" for e in prof.events())          # torch's own copies: no views were made


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_update_is_right_when_the_moments_come_back_in_another_layout(amsgrad):
    """Moments saved from an NCHW model (a GPU run) restored into a channels-last model: they are copied into the
    parameters' layout, and the steps equal those of a run that never changed layout. (torch 2.13's fused CPU
    kernel alone pairs the wrong elements there.)"""
    from minidiff.fast import AdamW
    models = [_random_unet(num_classes=10).to(memory_format=torch.channels_last) for _ in range(2)]
    opts = [AdamW(m.parameters(), lr=1e-3, fused=True, amsgrad=amsgrad) for m in models]
    for m, opt in zip(models, opts):
        _adam_steps(m, opt, 2)
    state = opts[1].state_dict()
    for s in state["state"].values():
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[:3 if amsgrad else 2]:
            s[key] = s[key].contiguous()
    opts[1].load_state_dict(state)
    assert not all(s["exp_avg"].is_contiguous(memory_format=torch.channels_last) for s in opts[1].state.values())
    for m, opt in zip(models, opts):
        _adam_steps(m, opt, 2, seed=2)
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)
    assert all(s["exp_avg"].stride() == p.stride() for p, s in opts[1].state.items())


def test_report_keeps_float32_and_bf16_results_apart(tmp_path):
    report = benchmark_module("report")
    for name, precision in (("cuda-2026-01-02.json", "float32"), ("cuda-bf16-2026-01-03.json", "bfloat16 autocast"),
                            ("cuda-2026-01-01.json", "float32 (older)"), ("cpu-2026-01-04.json", "float32 (cpu)")):
        (tmp_path / name).write_text(json.dumps({"method": {"precision": precision}}))
    assert report.load("cuda", tmp_path)["method"]["precision"] == "float32"
    assert report.load("cuda", tmp_path, bf16=True)["method"]["precision"] == "bfloat16 autocast"
    assert report.load("cpu", tmp_path, bf16=True) is None


def test_report_reads_both_namings_of_the_two_gpu_layouts():
    """Older runs timed channels-last by default plus "minidiff-nchw"; newer ones NCHW plus
    "minidiff-channels-last" (minidiff.train's GPU layout first). Both give (channels-last, NCHW) images/s."""
    report, bench = benchmark_module("report"), benchmark_module("bench")
    older = {"minidiff": {"images_per_s": 100.0}, "minidiff-nchw": {"images_per_s": 120.0}}
    newer = {"minidiff": {"images_per_s": 120.0}, "minidiff-channels-last": {"images_per_s": 100.0}}
    assert report.layouts(older) == report.layouts(newer) == (100.0, 120.0)
    assert report.layouts({"minidiff": {"images_per_s": 1.0}}) is None
    for name in ("minidiff", "minidiff-nchw", "minidiff-channels-last", "minidiff-compiled"):
        assert (bench.path_suffix(name), name) in list(report.PATHS)


def test_bench_builds_minidiff_in_the_layout_train_uses():
    bench = benchmark_module("bench")
    cpu = torch.device("cpu")
    assert bench.is_channels_last(bench.build("fmnist-28px", "minidiff", cpu))          # as train on the CPU
    assert not bench.is_channels_last(bench.build("fmnist-28px", "minidiff", cpu, channels_last=False))
    assert bench.is_channels_last(bench.build("fmnist-28px", "minidiff", cpu, channels_last=True))


def test_report_names_the_sizes_a_stopped_run_did_not_finish():
    report = benchmark_module("report")
    run = {"command": "bench.py --device cuda --sizes ddpm-cifar10-32px,fmnist-28px", "partial": True,
           "sizes": {"ddpm-cifar10-32px": {}}}
    assert report.unfinished(run) == ["fmnist-28px"]
    assert report.unfinished({**run, "partial": False}) == []
    assert report.unfinished({"command": "bench.py --device cpu", "partial": True, "sizes": {}}) == list(report.SIZES)


def test_bench_adds_sizes_only_to_a_run_of_the_same_setup():
    bench = benchmark_module("bench")

    def run(gpu: str, sizes: list[str], date: str) -> dict:
        return {"device": "cuda", "machine": {"gpu": gpu}, "method": {"precision": "bfloat16 autocast"},
                "versions": {"torch": "2.11.0", "diffusers": "0.42.1"}, "command": f"bench.py --sizes {sizes}",
                "date": date, "sizes": {s: {"ratios": {"from": date}} for s in sizes}, "ablation": {"from": date}}

    earlier = run("H100", ["ddpm-cifar10-32px", "fmnist-28px"], "2026-01-01")
    now = {**run("H100", [], "2026-01-02"), "sizes": {}}
    del now["ablation"]
    merged = bench.add_to(earlier, now, ["fmnist-28px"])
    assert merged["sizes"] == {"ddpm-cifar10-32px": {"ratios": {"from": "2026-01-01"}}}   # the re-run size is dropped
    assert [r["sizes"] for r in merged["runs"]] == [["ddpm-cifar10-32px"], ["fmnist-28px"]]
    assert merged["ablation"] == {"from": "2026-01-01"} and merged["date"] == "2026-01-02"
    with pytest.raises(ValueError, match="GPU is 'H100', this run's is 'H200'"):
        bench.add_to(earlier, {**now, "machine": {"gpu": "H200"}}, ["fmnist-28px"])


def test_compiled_model_keeps_its_old_import():
    from minidiff import samplers

    assert samplers.CompiledModel is fast.CompiledModel
