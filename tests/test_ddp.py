"""Multi-process training: two CPU processes under torchrun (gloo) train one model with DistributedDataParallel."""
import os
import subprocess
import sys
import textwrap

import torch

WORKER = textwrap.dedent("""
    import os, sys, torch
    from minidiff.train import TrainConfig, train

    out = sys.argv[1]
    config = TrainConfig(dataset="moons", model="mlp", model_kwargs={"hidden": 32, "num_layers": 1}, T=100,
                         batch_size=32, steps=12, lr=1e-2, warmup=0, limit=512, log_every=4, sample_every=6,
                         sample_n=100, sample_steps=2, checkpoint_every=6, out=out, device="cpu")
    result = train(config, progress=False)
    rank = int(os.environ["RANK"])
    torch.save({"model": result.model.state_dict(), "ema": result.ema_model.state_dict(),
                "losses": torch.tensor(result.losses)}, os.path.join(sys.argv[2], f"rank{rank}.pt"))
""")


def test_two_gloo_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out, results = tmp_path / "run", tmp_path / "results"
    results.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script), str(out), str(results)], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [torch.load(results / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key in ("model", "ema"):
        for name, a in ranks[0][key].items():
            assert torch.equal(a, ranks[1][key][name]), f"{key}.{name} differs between the ranks"
    assert torch.equal(ranks[0]["losses"], ranks[1]["losses"])      # the loss history is averaged over ranks
    assert len(ranks[0]["losses"]) == 12 and bool(torch.isfinite(ranks[0]["losses"]).all())

    from minidiff.checkpoint import load_model, read_checkpoint
    ckpt = read_checkpoint(out / "ckpt.pt")                         # written once, by rank 0
    assert ckpt["step"] == 12 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["noise"], ckpt["rng"][1]["noise"])   # each rank its own noise
    model, _, _ = load_model(out / "ckpt.pt", ema=False, device="cpu")
    for name, a in model.state_dict().items():
        assert torch.equal(a, ranks[0]["model"][name])
    assert model.out.weight.abs().sum() > 0      # training ran: the output layer starts at exactly zero
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_0000006.png", "step_0000012.png"]
