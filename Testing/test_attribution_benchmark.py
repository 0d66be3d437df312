"""The side-by-side benchmark command: runs, counts model evaluations honestly, and finds agreement with captum."""
from __future__ import annotations

import argparse
import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("captum")

from XAIExplainerLib import benchmark  # noqa: E402


def test_tiny_kernel_shap_benchmark_uses_one_kth_of_captums_evaluations_and_agrees(tmp_path):
    lines: list[str] = []
    out = tmp_path / "bench.json"
    rows = benchmark.run_benchmark(
        "tiny", methods=["kernel_shap"], n_samples={"kernel_shap": 5, "kernel_shap_cubes": 8}, device="cpu",
        out=out, log=lines.append, isolate=False,  # in-process: no 3 s torch import per run

    )
    ours, captum = rows
    assert (ours["implementation"], captum["implementation"]) == ("ours", "captum")
    assert ours["classes"] == captum["classes"] == 2  # the output layer is balanced so every class is predicted
    assert ours["model_evaluations"] == 5
    assert captum["model_evaluations"] == 10 and captum["evaluation_ratio_peer_over_ours"] == 2.0
    assert captum["max_abs_diff_rel"] < 1e-4 and captum["pearson_r_min"] > 0.99999  # same coalitions
    saved = json.loads(out.read_text())
    assert saved["counts"]["kernel_shap"] == 5 and "kernel_shap" in saved["table"]
    assert any("kernel_shap_cubes=8" in line for line in lines)


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
