"""The GPU paths give the CPU's answers: the U-Net, the samplers, the fused optimizer, bf16 training and the
compiled sampler (inductor kernels and CUDA graphs). Skipped where no CUDA device is present (CI); run them on a
GPU machine with ``python -m pytest tests/test_cuda.py``."""
import pytest
import torch

import minidiff as md
from minidiff.fast import CompiledModel
from minidiff.train import TrainConfig, make_optimizer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """No TF32: CUDA then computes in the CPU's precision and the two agree to float32 rounding."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def _random_unet(seed: int = 0, **kw) -> md.UNet:
    """A small conditional U-Net with every parameter random (the zero-initialised layers too), in eval mode."""
    model = md.UNet(**{**dict(base_channels=16, channel_mults=(1, 2), attention_levels=(False, True),
                              num_classes=3), **kw})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model.eval()


@pytest.mark.parametrize("channels_last", [False, True])
def test_unet_on_cuda_matches_the_cpu(channels_last):
    model = _random_unet()
    x = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([0, 10, 200, 500, 900, 999]), torch.tensor([0, 1, 2, 3, 0, 1])   # 3: the no-label index
    with torch.no_grad():
        expected = model(x, t, y)
        gpu = model.to(CUDA)
        x_gpu = x.to(CUDA)
        if channels_last:
            gpu, x_gpu = gpu.to(memory_format=torch.channels_last), x_gpu.contiguous(memory_format=torch.channels_last)
        got = gpu(x_gpu, t.to(CUDA), y.to(CUDA)).cpu()
    # float32 both sides (no TF32), but cuDNN picks other algorithms (implicit GEMM, Winograd, FFT) whose rounding
    # reaches ~1e-6..1e-5 of the terms' scale: 1e-4 leaves room on outputs of order 1
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_samplers_on_cuda_match_the_cpu():
    """Same x_T and (CPU-generated) noise: DDIM (guided, eta > 0) and DDPM end where the CPU run ends."""
    model, sched = _random_unet(), md.NoiseSchedule.linear(T=100, beta_start=1e-3, beta_end=0.1)
    x_T = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 0])
    cpu = md.ddim_sample(model, x_T.shape, sched, steps=10, x_T=x_T, y=y, guidance_scale=2.0)
    gpu = md.ddim_sample(model.to(CUDA), x_T.shape, sched, steps=10, x_T=x_T.to(CUDA), y=y.to(CUDA),
                         guidance_scale=2.0)
    assert gpu.device.type == "cuda"
    # the model's ~1e-5 disagreement (above), times 2s - 1 = 3 for guidance and x0_hat's 1 / sqrt(ab) <= 14 on this
    # schedule, over 10 steps: ~1e-4 to 1e-3
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    # DDPM draws its noise from the generator's device: a CUDA generator, seeded, repeats itself exactly.
    runs = [md.ddpm_sample(model, x_T.shape, sched, x_T=x_T.to(CUDA), y=y.to(CUDA),
                           generator=torch.Generator(CUDA).manual_seed(3)) for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and bool(torch.isfinite(runs[0]).all())


def test_fused_adamw_on_cuda_matches_the_reference():
    torch.manual_seed(0)
    ref = torch.nn.Linear(32, 8).to(CUDA)
    fused = torch.nn.Linear(32, 8).to(CUDA)
    fused.load_state_dict(ref.state_dict())
    config = TrainConfig(lr=1e-2, weight_decay=0.01)
    opt = make_optimizer(fused, config, CUDA)
    assert opt.defaults.get("fused") is True
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    x = torch.randn(64, 32, device=CUDA)
    for _ in range(20):
        for m, o in ((ref, ref_opt), (fused, opt)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    # The fused kernel orders its float32 arithmetic differently, and 20 Adam steps of size lr = 1e-2 feed the
    # difference back (m / sqrt(v) is sensitive wherever a gradient is near 0), so no rounding bound holds at the
    # end; the tolerance is set by what a bug would do instead: 3e-4 is 3% of one step, a wrong update rule is off
    # by whole steps. (Seen: 3.9e-5 on an H100, 1.1e-4 on an H200.)
    for a, b in zip(ref.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=3e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_on_cuda_lowers_the_loss(tmp_path, bf16):
    config = TrainConfig(dataset="8gaussians", model="mlp", T=1000, batch_size=256, lr=1e-3, warmup=20,
                         steps=300, limit=5000, sample_every=0, checkpoint_every=0, log_every=50,
                         out=str(tmp_path / "run"), seed=3, device="cuda", bf16=bf16)
    result = train(config, progress=False)
    losses = torch.tensor(result.losses)
    assert len(losses) == 300 and bool(torch.isfinite(losses).all())
    assert losses[-50:].mean() < 0.7 * losses[:10].mean()
    model, _, saved = md.load_model(result.checkpoint, device="cpu")      # the checkpoint holds CPU tensors
    assert next(model.parameters()).device.type == "cpu" and saved["step"] == 300


def test_compiled_model_with_cuda_graphs_matches_eager():
    """The default compiled path on CUDA: inductor kernels replayed as a CUDA graph every step."""
    model = _random_unet().to(CUDA)
    sched = md.NoiseSchedule.linear(T=100, beta_start=1e-3, beta_end=0.1)
    x_T = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(4)).to(CUDA)
    y = torch.tensor([0, 1, 2, 0], device=CUDA)
    fast = CompiledModel(model)
    eager = md.ddim_sample(model, x_T.shape, sched, steps=10, x_T=x_T, y=y, guidance_scale=2.0)
    for _ in range(2):                                    # the first run compiles and records; the second replays
        got = md.ddim_sample(fast, x_T.shape, sched, steps=10, x_T=x_T, y=y, guidance_scale=2.0)
        # inductor's fused, reordered float32 kernels: as CUDA against the CPU above
        torch.testing.assert_close(got, eager, rtol=1e-3, atol=1e-3)
    t = torch.full((4,), 50, device=CUDA)
    first = fast(x_T, t, y)
    kept = first.clone()
    fast(x_T, t + 40, y)                                  # a replay must not overwrite the earlier result
    assert torch.equal(first, kept)


def test_compiled_model_under_bf16_autocast_is_as_accurate_as_eager():
    """bf16 sampling as ``benchmarks/bench.py --bf16`` runs it: under autocast the compiled network (inductor
    kernels, CUDA graph) is as close to the float32 answer as eager bf16 is."""
    model = _random_unet().to(CUDA)
    x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(5)).to(CUDA)
    t, y = torch.tensor([3, 30, 60, 90], device=CUDA), torch.tensor([0, 1, 2, 3], device=CUDA)
    fast = CompiledModel(model)
    with torch.no_grad():
        reference = model(x, t, y)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager = model(x, t, y)
            got = [fast(x, t, y) for _ in range(2)]          # the first call compiles and records, then a replay
    eager_error = (eager.float() - reference).abs().max()
    # bf16 keeps 8 bits (eps 7.8e-3): a few of its ulps of the output scale, so under 5%; the compiled network may
    # round in other places, but no worse than twice eager's error
    assert eager.dtype == torch.bfloat16 and 0 < eager_error < 0.05 * reference.abs().max()
    for g in got:
        assert (g.float() - reference).abs().max() <= 2 * eager_error


def test_loss_with_the_schedule_on_the_gpu_equals_the_loss_with_the_cpu_schedule():
    """minidiff.fast.schedule_on: the schedule's tensors on the GPU (no host copy per training step), the same
    loss: the same noise, timesteps and float64 entries cast to float32 on the device instead of the host."""
    sched = md.NoiseSchedule.cosine(T=100)
    moved = md.fast.schedule_on(sched, CUDA)
    assert moved.alpha_bars.device.type == "cuda" and torch.equal(moved.alpha_bars.cpu(), sched.alpha_bars)
    model = _random_unet().to(CUDA)
    x0 = torch.rand(6, 1, 8, 8, device=CUDA) * 2 - 1
    losses = [md.eps_loss(model, x0, s, y=torch.arange(6, device=CUDA) % 3,
                          generator=torch.Generator(CUDA).manual_seed(1)) for s in (sched, moved)]
    # float64 -> float32 casts are correctly rounded on host and device alike: the same numbers, the same kernels
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
