"""SmoothGrad (Smilkov et al. 2017): the mean gradient over noisy copies of the input, all targets at once.

Sample *i*'s noise comes from a ``torch.Generator`` seeded from ``(seed, i)``, so the result does not depend on the
batch size, and the same seed on the same device gives the same attributions.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidVolumeError, MethodParameterError
from . import gradient_engine as engine
from .registry import MethodSpec, OptionSpec, register_method
from .result import AttributionResult
from .vanilla_gradient import GRAD_STRATEGY_OPTION

if TYPE_CHECKING:
    import torch

    from ..models.sliding_window import SlidingWindow


#: Named (n_samples, noise_level) settings. "thesis-0.2"/"thesis-0.3": the regression-CNN thesis (sigma = 0.2 or 0.3
#: of the input's range, n = 30); "paper": Smilkov et al. 2017 (noise 10-20 % of the range, here the middle, 15 %;
#: n = 50, beyond which they saw diminishing returns).
SMOOTHGRAD_SETTINGS: dict[str, dict[str, float]] = {
    "thesis-0.2": {"n_samples": 30, "noise_level": 0.2},
    "thesis-0.3": {"n_samples": 30, "noise_level": 0.3},
    "paper": {"n_samples": 50, "noise_level": 0.15},
}


def smoothgrad_settings(name: str) -> dict[str, float]:
    """The options of a named setting (a copy); unknown names raise :class:`MethodParameterError`."""
    if name not in SMOOTHGRAD_SETTINGS:
        raise MethodParameterError(f"SmoothGrad settings {name!r} unknown; use one of {', '.join(SMOOTHGRAD_SETTINGS)}"
                                   " (or give --samples and --noise-level).")
    return dict(SMOOTHGRAD_SETTINGS[name])


def smoothgrad_noise_std(x: Any, noise_level: float) -> float:
    """σ = noise_level · (max − min) of the input, SmoothGrad's (and Agg2Exp's) noise scale."""
    return float(noise_level) * float(x.max() - x.min())


def sample_generator(seed: int, index: int, device) -> "torch.Generator":
    """A generator for sample ``index`` of run ``seed``: independent streams, whatever the batching."""
    import torch

    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(state[0]) << 31 ^ int(state[1]))
    return gen


def _explicit_noise(noise: Any, x: "torch.Tensor") -> "torch.Tensor":
    import torch

    if not isinstance(noise, torch.Tensor) or tuple(noise.shape[1:]) != tuple(x.shape[1:]):
        raise InvalidVolumeError(f"noise must be a tensor (n_samples, {', '.join(map(str, x.shape[1:]))}), got "
                                 f"{tuple(getattr(noise, 'shape', ()))}.")
    return noise.detach().to(x.device)


def smoothgrad(
    model: Any,
    x: Any,
    target: Any,
    *,
    n_samples: int = 20,
    noise_level: float = 0.1,
    seed: int = 0,
    noise: "torch.Tensor | None" = None,
    device: Any = None,
    batch_size: int | None = None,
    window: "SlidingWindow | str | None" = "auto",
    grad_strategy: str = "loop",
    progress: engine.Progress | None = None,
    cancel: engine.Cancel | None = None,
) -> AttributionResult:
    """Mean of ∇score_k over ``n_samples`` noisy copies x + ε, ε ~ N(0, σ²), σ = noise_level·(max−min) of x.

    ``noise`` (shape ``(n_samples, *x.shape[1:])``) replaces the drawn noise, to reproduce another library's
    draws exactly (e.g. captum's NoiseTunnel); ``n_samples`` is then taken from it.
    """
    import torch

    started = time.perf_counter()
    x, network, window = engine.prepare(model, x, target, device, window)
    sigma = smoothgrad_noise_std(x, noise_level)
    if noise is not None:
        noise = _explicit_noise(noise, x)
        n_samples = int(noise.shape[0])
    if isinstance(n_samples, bool) or int(n_samples) < 1:
        raise MethodParameterError(f"option 'n_samples' got {n_samples}; allowed: an integer >= 1.")
    n_samples = int(n_samples)

    def make_sample(i: int) -> "torch.Tensor":
        if noise is not None:
            return x + noise[i : i + 1].to(x.dtype)
        eps = torch.randn(x.shape, generator=sample_generator(seed, i, x.device), device=x.device, dtype=x.dtype)
        return x + sigma * eps

    acc, _scores, info = engine.accumulate(
        network, x, target, method="smoothgrad", make_sample=make_sample, sample_weights=[1.0 / n_samples] * n_samples,
        window=window, batch_size=batch_size, grad_strategy=grad_strategy, progress=progress, cancel=cancel,
    )
    params = {"n_samples": n_samples, "noise_level": float(noise_level), "sigma": sigma if noise is None else None,
              "explicit_noise": noise is not None, "window": engine.window_params(window),
              "grad_strategy": grad_strategy}
    seed_used = None if noise is not None else int(seed)
    return engine.finish(acc, target, model, "smoothgrad", params, info, started, seed_used)


register_method(MethodSpec(
    "smoothgrad", "SmoothGrad",
    "Gradients averaged over noisy copies of the input (noise sigma = noise level x intensity range).",
    "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise, arXiv:1706.03825",
    smoothgrad, ("segmentation", "regression", "classifier"), (
        OptionSpec("n_samples", int, 20, "noisy copies whose gradients are averaged", label="Noise samples",
                   minimum=1, cli_flag="--samples"),
        OptionSpec("noise_level", float, 0.1, "noise sigma as a fraction of the input's intensity range (max - min)",
                   label="Noise level", minimum=0.0, exclusive_minimum=True, maximum=1.0),
        GRAD_STRATEGY_OPTION,
    ), deterministic=False), replace=True)
