"""Train PhaseNet's convnet on beads simulated on the fly, ship float16 weights + config + evaluation.

    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/train_phasenet.py --minutes 13.5 \
        --output XAIExplainerLib/Resources/PhaseNet
    PYTHONPATH=. OMP_NUM_THREADS=1 python tools/train_phasenet.py --evaluate-only \
        --output XAIExplainerLib/Resources/PhaseNet          # re-measure the shipped weights

Training data: fresh PhaseNet simulations every step from ``numpy.random.default_rng(seed)`` (seed 0); the
held-out set: ``--eval-samples`` beads from another seed (``--eval-seed``, 2026), never seen in training. The
evaluation loads the shipped float16 file through the regression adapter (the same path ``xai-explainer lime``
takes) and records per-mode R² and RMSE, the same numbers for the float32 weights before rounding, the weights'
sha256 and the command.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from XAIExplainerLib.datasets.phasenet import (NOLL_MODES, TARGET_NAMES, Optics, PsfSimulator,
                                               normalize_percentiles)
from XAIExplainerLib.models.phasenet_net import PhaseNet3D

ARCHITECTURE = "XAIExplainerLib.models.phasenet_net:PhaseNet3D"
WEIGHTS_NAME = "phasenet_beads.pt"


def model_config(widths: list[int]) -> dict:
    """The JSON the regression adapter reads: architecture, axis order, preprocessing and target names."""
    o = Optics()
    return {
        "kind": "regression",
        "modality": "MRI",
        "architecture": ARCHITECTURE,
        "network_kwargs": {"widths": widths, "dense": [64, 64], "input_shape": list(o.crop_shape)},
        "axis_order": "zyx",
        "spacing": [o.spacing_zyx[2], o.spacing_zyx[1], o.spacing_zyx[0]],
        "preprocessing": [
            {"transform": "ResizeWithPadOrCrop", "spatial_size": list(o.crop_shape)},
            {"transform": "ScaleIntensityRangePercentiles", "lower": 3.0, "upper": 99.8, "b_min": 0.0,
             "b_max": 1.0, "clip": False},
        ],
        "target_names": list(TARGET_NAMES),
        "target_units": ["um"] * len(TARGET_NAMES),
        "description": ("PhaseNet convnet (Saha et al. 2020) trained on simulated fluorescent beads: 32^3 crops "
                        "(z, y, x), voxel 0.1 um axial x 0.086 um lateral, NA 1.1, n 1.33, wavelength 0.5 um; "
                        "predicts the RMS amplitudes (um) of Zernike modes Noll 5-15. 'modality' is only a label "
                        "here: the preprocessing list above is what runs (crop/pad to 32^3, scale between the "
                        "3rd and 99.8th percentiles, as csbdeep's normalize)."),
        "extra": {"optics": {"na": o.na, "refractive_index": o.refractive_index, "wavelength_um": o.wavelength,
                             "spacing_zyx_um": list(o.spacing_zyx), "amplitude_range_um": o.amplitude,
                             "snr": list(o.snr), "noll_modes": list(NOLL_MODES)}},
    }


def simulated_set(seed: int, n: int, batch: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """n normalised bead crops (n, 1, 32, 32, 32) and their amplitudes (n, 11) from ``seed``."""
    simulator, rng = PsfSimulator(), np.random.default_rng(seed)
    xs, ys = [], []
    for start in range(0, n, batch):
        x, y = simulator.batch(rng, min(batch, n - start))
        xs.append(normalize_percentiles(x)[:, None])
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def predict(network: torch.nn.Module, x: np.ndarray, batch: int = 32) -> np.ndarray:
    network.eval()
    with torch.no_grad():
        return np.concatenate([network(torch.from_numpy(x[i:i + batch]).float()).double().numpy()
                               for i in range(0, len(x), batch)])


def metrics(truth: np.ndarray, pred: np.ndarray) -> dict:
    """Per-mode R² (1 − SSE/SST about the held-out mean) and RMSE in µm, and their means."""
    sse = ((pred - truth) ** 2).sum(0)
    sst = ((truth - truth.mean(0)) ** 2).sum(0)
    r2, rmse = 1.0 - sse / sst, np.sqrt(sse / len(truth))
    return {"per_mode": {name: {"r2": round(float(a), 4), "rmse_um": round(float(b), 5)}
                         for name, a, b in zip(TARGET_NAMES, r2, rmse)},
            "mean_r2": round(float(r2.mean()), 4), "mean_rmse_um": round(float(rmse.mean()), 5),
            "rmse_predicting_zero_um": round(float(np.sqrt((truth ** 2).mean())), 5)}


def learning_rate(fraction: float, lr_max: float) -> float:
    """Linear warm-up over the first 5 % of the time budget, then cosine to 1 % of ``lr_max``."""
    if fraction < 0.05:
        return lr_max * (0.1 + 0.9 * fraction / 0.05)
    progress = min(1.0, (fraction - 0.05) / 0.95)
    return lr_max * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * progress)))


def train(args: argparse.Namespace) -> tuple[PhaseNet3D, dict]:
    """Adam on fresh simulations until ``--minutes`` of wall time (the CPU is shared, so the schedule follows the
    clock, not a step count: the run always ends annealed; the steps done are recorded)."""
    torch.manual_seed(args.seed)
    simulator, rng = PsfSimulator(), np.random.default_rng(args.seed)
    network = PhaseNet3D(widths=args.widths)
    optimizer = torch.optim.Adam(network.parameters(), lr=args.lr)
    scale = 1.0 / Optics().amplitude  # loss in units of the amplitude range (Adam is scale-free; logs readable)
    budget, t0, log, running, step = args.minutes * 60.0, time.perf_counter(), [], None, 0
    while time.perf_counter() - t0 < budget and step < args.max_steps:
        step += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate((time.perf_counter() - t0) / budget, args.lr)
        x, y = simulator.batch(rng, args.batch)
        x = torch.from_numpy(normalize_percentiles(x)[:, None])
        network.train()
        loss = (((network(x) - torch.from_numpy(y).float()) * scale) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 50 == 0:
            log.append({"step": step, "loss_ema": round(running, 4), "seconds": round(time.perf_counter() - t0, 1),
                        "lr": round(optimizer.param_groups[0]["lr"], 6)})
            print(log[-1], flush=True)
    info = {"steps": step, "batch": args.batch, "samples_seen": step * args.batch, "lr_max": args.lr,
            "schedule": "5% linear warm-up then cosine to 1%, over the wall-time budget", "minutes": args.minutes,
            "loss": "MSE on amplitudes / 0.15 um (predicting 0 scores 1/3)", "final_loss_ema": round(running, 4),
            "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1), "log": log}
    return network, info


def evaluate(out: Path, args: argparse.Namespace, float32_network: PhaseNet3D | None = None) -> dict:
    """Metrics of the shipped file, loaded through RegressionModel as the lime command loads it."""
    from XAIExplainerLib.models import RegressionModel
    from XAIExplainerLib.provenance import sha256_file

    model = RegressionModel.load(out / WEIGHTS_NAME, device="cpu", precision="float32")
    x, y = simulated_set(args.eval_seed, args.eval_samples)
    result = {"held_out": {"seed": args.eval_seed, "n_samples": args.eval_samples,
                           "generator": "XAIExplainerLib.datasets.phasenet.PsfSimulator().batch"},
              "weights": WEIGHTS_NAME, "weights_sha256": sha256_file(out / WEIGHTS_NAME),
              "float16_weights": metrics(y, predict(model.network, x)),
              "float16_weights_first_50": metrics(y[:50], predict(model.network, x[:50]))}
    if float32_network is not None:
        result["float32_weights_before_rounding"] = metrics(y, predict(float32_network, x))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", type=Path, default=Path("XAIExplainerLib/Resources/PhaseNet"))
    p.add_argument("--minutes", type=float, default=14.0, help="wall-time budget of the training loop")
    p.add_argument("--max-steps", type=int, default=10**9, help="stop earlier after this many steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--widths", type=int, nargs=5, default=[8, 16, 32, 64, 128])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-seed", type=int, default=2026)
    p.add_argument("--eval-samples", type=int, default=500)
    p.add_argument("--evaluate-only", action="store_true", help="re-measure the shipped weights and print them")
    p.add_argument("--write", action="store_true", help="with --evaluate-only: also rewrite the config JSON and "
                                                          "the measured part of evaluation.json (training kept)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    command = "PYTHONPATH=. OMP_NUM_THREADS=1 python tools/train_phasenet.py " + " ".join(argv or sys.argv[1:])
    if args.evaluate_only:
        if args.write:
            (args.output / "phasenet_beads.json").write_text(json.dumps(model_config(args.widths), indent=2) + "\n")
        result = evaluate(args.output, args)
        print(json.dumps(result, indent=2))
        if args.write:
            path = args.output / "evaluation.json"
            previous = json.loads(path.read_text()) if path.is_file() else {}
            previous.update(result)
            path.write_text(json.dumps(previous, indent=2) + "\n")
        return 0
    network, info = train(args)
    args.output.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in network.state_dict().items()}, args.output / WEIGHTS_NAME)
    (args.output / "phasenet_beads.json").write_text(json.dumps(model_config(args.widths), indent=2) + "\n")
    result = evaluate(args.output, args, network)
    result.update(command=command, training=info,
                  re_measure=("PYTHONPATH=. OMP_NUM_THREADS=1 python tools/train_phasenet.py --evaluate-only "
                              f"--output {args.output} --eval-seed {args.eval_seed} --eval-samples "
                              f"{args.eval_samples}"))
    (args.output / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("float16_weights",)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
