"""benchmarks/quality.py, the sweeps behind the tables of chapters 6 and 7: cells, resuming, merging."""
import json
from pathlib import Path

import pytest
from benchmark_scripts import benchmark_module

ROOT = Path(__file__).resolve().parent.parent
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(),
                                 reason="the Debian package dataset-fashion-mnist is not installed")]


@pytest.fixture(scope="module")
def quality():
    return benchmark_module("quality")


def test_ddim_table_cells_resume_and_merge(quality, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    common = ["ddim-table", "--n", "20", "--batch-size", "20", "--device", "cpu"]
    assert quality.main([*common, "--only", "0.0:10,sigma_hat:10", "--out", str(a)]) == 0
    res = json.loads(a.read_text())
    assert [c["key"] for c in res["cells"]] == [{"eta": 0.0, "steps": 10},
                                                {"sampler": "ddpm", "variance": "beta", "steps": 10}]
    assert res["checkpoint"] == "checkpoints/fashion-mnist-cond.pt" and res["n"] == 20
    assert all(c["n"] == 20 and c["fd_cls"] > 0 and 0 <= c["class_agreement"] <= 1 for c in res["cells"])
    # The sigma-hat cell is DDPM on the skipped steps with variance beta: recompute it directly.
    import minidiff as md
    model, sched, _ = md.load_model(ROOT / "checkpoints" / "fashion-mnist-cond.pt", device="cpu")
    samples, labels, _ = md.evaluate.generate(model, sched, n=20, sampler="ddpm", steps=10, variance="beta",
                                              batch_size=20, seed=0, device="cpu")
    # the same samples (seed, batch) and float32 network on the same machine, then float64 statistics: equal up to a
    # reordering of float32 sums in the features (~1e-7 relative), which rel 1e-6 absorbs
    assert md.evaluate_samples(samples, labels)["fd_cls"] == pytest.approx(res["cells"][1]["fd_cls"], rel=1e-6)

    # Run again: nothing to do, and the rerun is recorded.
    capsys.readouterr()
    assert quality.main([*common, "--only", "0.0:10,sigma_hat:10", "--out", str(a)]) == 0
    again = json.loads(a.read_text())
    assert again["cells"] == res["cells"] and len(again["resumed"]) == 1
    assert capsys.readouterr().out == ""                                 # no cell printed: none was computed

    # Another part, then the merge: still incomplete (2 + 1 of 25 cells).
    assert quality.main([*common, "--only", "1.0:10", "--out", str(b)]) == 0
    merged = tmp_path / "m.json"
    assert quality.main(["merge", str(a), str(b), "--out", str(merged)]) == 0
    m = json.loads(merged.read_text())
    assert len(m["cells"]) == 3 and m["complete"] is False

    with pytest.raises(SystemExit):
        quality.main([*common, "--only", "0.3:10", "--out", str(b)])      # not a cell of the sweep
