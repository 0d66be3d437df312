"""Partial-convolution inpainting (Liu et al. 2018) in 3D: the marginalisation of counterfactual saliency.

Why partial convolutions: a counterfactual must replace a region by plausible tissue *without* leaking what was
there. A partial convolution sees only known voxels (hole voxels are multiplied by 0 before the convolution), so
the network's prediction inside a hole cannot depend on the removed content; the valid-fraction rescaling
(``sum(1) / sum(M)``) keeps the response of a window independent of how many of its voxels were known.

Conventions (as NVIDIA's reference ``partialconv``, BSD-3):

* ``valid`` / ``mask``: 1 = known voxel, 0 = hole. A mask has one channel (shared by all feature channels) or
  one per input channel (concatenated skip connections carry one mask per source).
* ``out = W^T (X ⊙ M) · sum(1)/sum(M) + b`` where ``sum(M) > 0``, else 0; ``sum(1)`` counts the window's
  positions (times the mask channels). Zero padding counts as hole, so the rescaling also acts at the border;
  with a full mask and ``padding=0`` the layer equals ``nn.Conv3d`` with the same weights.
* Updated mask: 1 wherever the window held at least one valid voxel (returned with one channel).

:func:`composite` puts the known voxels back exactly: an inpainter's output is only used inside the hole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelConfigError, WeightsError

#: Architecture name written into an inpainter's JSON (so another file cannot be read as one).
ARCHITECTURE = "PartialConvUNet3d"
CONFIG_KEYS = ("in_channels", "depth", "base_channels", "max_channels", "kernel_sizes", "batch_norm_in_encoder")


def _triple(value: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    out = tuple(int(v) for v in value)
    if len(out) != 3:
        raise ValueError(f"expected an int or three ints, got {value!r}")
    return out  # type: ignore[return-value]


class PartialConv3d(nn.Conv3d):
    """``nn.Conv3d`` over known voxels only; ``forward(x, mask) -> (out, updated_mask)``."""

    def forward(self, x: torch.Tensor,  # type: ignore[override]
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask is None:
            mask = torch.ones_like(x[:, :1])
        if mask.shape[1] not in (1, x.shape[1]) or mask.shape[2:] != x.shape[2:] or mask.shape[0] != x.shape[0]:
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit input {tuple(x.shape)}: it needs one "
                             "channel or one per input channel and the same batch and spatial size")
        mask = mask.to(x.dtype)
        with torch.no_grad():
            ones = torch.ones((1, mask.shape[1], *self.kernel_size), dtype=x.dtype, device=x.device)
            count = F.conv3d(mask, ones, stride=self.stride, padding=self.padding, dilation=self.dilation)
            window = float(ones.numel())
            updated = (count > 0).to(x.dtype)
            ratio = window / count.clamp_min(1.0) * updated
        raw = F.conv3d(x * mask, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        out = raw * ratio
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1, 1)
        return out * updated, updated


class _Block(nn.Module):
    """PConv → optional BatchNorm → activation; carries the mask along."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: bool, act: nn.Module | None) -> None:
        super().__init__()
        self.conv = PartialConv3d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=not norm)
        self.norm = nn.BatchNorm3d(cout) if norm else None
        self.act = act

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, m = self.conv(x, m)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x, m


class PartialConvUNet3d(nn.Module):
    """Liu et al.'s partial-convolution U-Net in 3D: ``forward(image, valid) -> image`` (not yet composited).

    Encoder: ``depth`` stride-2 partial convolutions (ReLU, BatchNorm except the first). Decoder: nearest
    upsampling of features *and* mask, concatenation with the skip (and its mask), a 3³ partial convolution
    (LeakyReLU 0.2, BatchNorm) per level; the last one maps back to ``in_channels`` from the concatenation with
    the input image, without norm or activation. The paper uses depth 8 on 2D images; for 48³ patches depth 4
    (48 → 3) is the default.

    ``batch_norm_in_encoder``: True for the first training phase; False for the fine-tuning phase, where the
    encoder's BatchNorm layers keep their running statistics and parameters frozen (holes make batch statistics
    wrong, Liu et al. §4). The weights are the same either way.
    Spatial sizes that are not multiples of ``2**depth`` are padded (as holes) and cropped back.
    """

    def __init__(self, in_channels: int = 1, depth: int = 4, base_channels: int = 16, max_channels: int = 128,
                 kernel_sizes: Sequence[int] | None = None, batch_norm_in_encoder: bool = True) -> None:
        super().__init__()
        if depth < 1 or base_channels < 1 or in_channels < 1:
            raise ValueError("depth, base_channels and in_channels must be positive")
        kernels = list(kernel_sizes) if kernel_sizes is not None else [5] + [3] * (depth - 1)
        if len(kernels) != depth or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernel_sizes needs {depth} odd sizes (one per encoder level), got {kernels}")
        self.config = {"in_channels": in_channels, "depth": depth, "base_channels": base_channels,
                       "max_channels": max_channels, "kernel_sizes": kernels,
                       "batch_norm_in_encoder": batch_norm_in_encoder}
        widths = [in_channels] + [min(base_channels * 2 ** i, max_channels) for i in range(depth)]
        self.encoder = nn.ModuleList(
            _Block(widths[i], widths[i + 1], kernels[i], 2, norm=i > 0, act=nn.ReLU()) for i in range(depth))
        self.decoder = nn.ModuleList(
            _Block(widths[i + 1] + widths[i], widths[i], 3, 1, norm=i > 0,
                   act=nn.LeakyReLU(0.2) if i > 0 else None) for i in reversed(range(depth)))
        self.batch_norm_in_encoder = batch_norm_in_encoder

    @property
    def batch_norm_in_encoder(self) -> bool:
        return self._bn_encoder

    @batch_norm_in_encoder.setter
    def batch_norm_in_encoder(self, value: bool) -> None:
        self._bn_encoder = bool(value)
        self.config["batch_norm_in_encoder"] = self._bn_encoder
        for block in self.encoder:
            if block.norm is not None:
                for p in block.norm.parameters():
                    p.requires_grad_(self._bn_encoder)
        self.train(self.training)

    def train(self, mode: bool = True) -> "PartialConvUNet3d":
        super().train(mode)
        if not getattr(self, "_bn_encoder", True):
            for block in self.encoder:
                if block.norm is not None:
                    block.norm.eval()
        return self

    def forward(self, image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        if image.dim() != 5 or valid.dim() != 5 or valid.shape[2:] != image.shape[2:]:
            raise ValueError(f"image {tuple(image.shape)} and valid {tuple(valid.shape)} must be (B, C, D, H, W) "
                             "on the same grid")
        size = image.shape[2:]
        step = 2 ** self.config["depth"]
        pad = [p for s in reversed(size) for p in (0, (-s) % step)]
        x, m = F.pad(image, pad), F.pad(valid.to(image.dtype), pad)
        skips = [(x, m)]
        for block in self.encoder:
            x, m = block(x, m)
            skips.append((x, m))
        skips.pop()
        for block in self.decoder:
            sx, sm = skips.pop()
            x = F.interpolate(x, size=sx.shape[2:], mode="nearest")
            m = F.interpolate(m, size=sx.shape[2:], mode="nearest")
            ms = torch.cat([m.expand(-1, x.shape[1], -1, -1, -1), sm.expand(-1, sx.shape[1], -1, -1, -1)], 1)
            x, m = block(torch.cat([x, sx], 1), ms)
        return x[(..., *[slice(0, s) for s in size])]


def composite(image: torch.Tensor, inpainted: torch.Tensor, hole_mask: torch.Tensor) -> torch.Tensor:
    """``image ⊙ (1 − M) + inpainted ⊙ M``; voxels with ``M == 0`` are the input's, bit for bit.

    ``hole_mask`` may be soft (values in [0, 1]: the relaxed counterfactual mask) and broadcasts over channels.
    Known voxels are taken with ``torch.where`` so that not even a NaN/Inf of the inpainter can reach them.
    """
    hole = hole_mask.to(image.dtype)
    blended = image * (1 - hole) + inpainted.to(image.dtype) * hole
    return torch.where(hole == 0, image, blended)


def _config_path(path: Path) -> Path:
    return path.with_name(path.name.split(".")[0] + ".json")


def save_inpainter(model: PartialConvUNet3d, path: str | Path, dtype: str = "float32",
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``<path>`` (state dict, ``float32`` or ``float16``) and ``<name>.json`` (architecture + config)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cast = torch.float16 if dtype == "float16" else torch.float32
    state = {k: (v.detach().to("cpu", cast) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    torch.save(state, target)
    config = {"architecture": ARCHITECTURE, **model.config, "dtype": dtype, **(extra or {})}
    _config_path(target).write_text(json.dumps(config, indent=2) + "\n")
    return target


def load_inpainter(path: str | Path, device: str | torch.device = "cpu") -> PartialConvUNet3d:
    """Rebuild the network from the JSON beside ``path`` and load its weights (float32, eval mode)."""
    from .weights import _torch_load, extract_state_dict, load_into

    source = Path(path)
    if not source.is_file():
        raise WeightsError(f"No inpainter weights at '{source}'. Pass the .pt written by save_inpainter.")
    config_file = _config_path(source)
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise ModelConfigError(f"No inpainter configuration '{config_file.name}' beside '{source.name}'; "
                               "save the model with save_inpainter, which writes both.") from None
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"'{config_file}' is not valid JSON ({exc}).") from None
    if not isinstance(config, dict) or config.get("architecture") != ARCHITECTURE:
        raise ModelConfigError(f"'{config_file}' does not describe a {ARCHITECTURE} (architecture: "
                               f"{config.get('architecture') if isinstance(config, dict) else None!r}).")
    model = PartialConvUNet3d(**{k: config[k] for k in CONFIG_KEYS if k in config})
    load_into(model, extract_state_dict(_torch_load(source), source), source)
    return model.float().to(device).eval()
