"""The side-by-side benchmark command: runs, counts model evaluations honestly, and finds agreement with captum."""
from __future__ import annotations

import argparse
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("captum")

from XAIExplainerLib.extras import benchmark  # noqa: E402


class SmallConvNet(torch.nn.Module):
    """A stand-in for SwinUNETR (seconds instead of minutes on a shared CPU); the driver logic is what is tested."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.hidden = torch.nn.Conv3d(1, 8, 3, padding=1)
        self.head = torch.nn.Conv3d(8, n_classes, 1)

    def forward(self, x):
        return self.head(torch.tanh(self.hidden(x)))


def test_tiny_kernel_shap_benchmark_uses_one_kth_of_captums_evaluations_and_agrees(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "_build_network", lambda profile, n_classes: SmallConvNet(n_classes))
    monkeypatch.setitem(benchmark.PROFILES, "tiny", dict(benchmark.PROFILES["tiny"], n_classes=3, size=16))
    lines: list[str] = []
    out = tmp_path / "bench.json"
    rows = benchmark.run_benchmark(
        "tiny", methods=["kernel_shap", "smoothgrad"], device="cpu",
        n_samples={"kernel_shap": 40, "kernel_shap_cubes": 27, "smoothgrad": 3},
        out=out, log=lines.append, isolate=False, batch_size=2,  # in-process: no 3 s torch import per run
    )
    ours, captum = rows[:2]
    assert (ours["implementation"], captum["implementation"]) == ("ours", "captum")
    assert ours["classes"] == captum["classes"] == 3  # the output layer is balanced so every class is predicted
    assert ours["model_evaluations"] == 40
    assert captum["model_evaluations"] == 120 and captum["evaluation_ratio_peer_over_ours"] == 3.0
    # same coalitions; the gap is captum's float32 least-squares with 10⁶ end-point weights (ours fits in float64)
    assert captum["max_abs_diff_rel"] < 1e-2 and captum["pearson_r_min"] > 0.99999
    # SmoothGrad: ours replays captum's and MONAI's noise draws, so the maps must match each peer
    by_impl = {(r["implementation"], r["noise_of"]): r for r in rows[2:]}
    assert set(by_impl) == {("ours", None), ("ours-unfused", None), ("ours", "monai"), ("captum", None), ("monai", None)}
    # no Swin attention in this network: fusing changes nothing, so ours equals ours-unfused bit for bit
    assert by_impl[("ours", None)]["agreement_with"] == "ours-unfused"
    assert by_impl[("ours", None)]["max_abs_diff_rel"] == 0.0
    assert by_impl[("captum", None)]["agreement_with"] == "ours-unfused"
    assert "time_ratio_peer_over_ours_unfused" in by_impl[("captum", None)]
    for peer in ("captum", "monai"):
        assert by_impl[(peer, None)]["max_abs_diff_rel"] < 1e-5 and by_impl[(peer, None)]["pearson_r_min"] > 0.99999
        assert by_impl[(peer, None)]["model_evaluations"] == 3 * by_impl[("ours", None)]["model_evaluations"] == 3 * 3
    saved = json.loads(out.read_text())
    assert saved["counts"]["kernel_shap"] == 40 and "kernel_shap" in saved["table"]
    assert any("kernel_shap_cubes=27" in line for line in lines)


def test_cli_registration_and_bad_options():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    benchmark.register(sub)
    args = parser.parse_args(["benchmark", "--quick", "--samples", "kernel_shap=5", "--methods", "kernel_shap"])
    assert args.func is benchmark._command and args.quick and args.methods == ["kernel_shap"]
    assert benchmark._parse_counts(args.samples) == {"kernel_shap": 5}
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=N"):
        benchmark._parse_counts(["kernel_shap"])
    with pytest.raises(ValueError, match="profile"):
        benchmark.run_benchmark("laptop")
    with pytest.raises(ValueError, match="sample-count key"):
        benchmark.run_benchmark("tiny", n_samples={"lime": 3})


def test_repeated_rounds_report_the_median_time(monkeypatch):
    monkeypatch.setattr(benchmark, "_build_network", lambda profile, n_classes: SmallConvNet(n_classes))
    monkeypatch.setitem(benchmark.PROFILES, "tiny", dict(benchmark.PROFILES["tiny"], n_classes=2, size=8))
    lines: list[str] = []
    rows = benchmark.run_benchmark("tiny", methods=["vanilla_gradient"], device="cpu", log=lines.append,
                                   isolate=False, repeat=3)
    for row in rows:
        assert len(row["seconds_each"]) == 3
        assert row["seconds"] == sorted(row["seconds_each"])[1]
    # rounds interleave the implementations, so a slow spell of the machine is shared between them
    order = [line.split("/ ")[1].split(" (")[0] for line in lines if line.startswith("  running")]
    assert order == ["ours", "captum"] * 3
    with pytest.raises(ValueError, match="repeat"):
        benchmark.run_benchmark("tiny", repeat=0)
