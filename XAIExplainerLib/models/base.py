"""The model adapter: one object per network that owns device, precision, preprocessing and grids.

Every explainer runs a network through an adapter, so that the questions "which dtype did it run in?", "was the
attention fused?", "how was the input prepared?" and "where is this voxel on the input?" have one answer each,
recorded by :meth:`ModelAdapter.describe`. Subclasses (one per model kind) add what their outputs mean.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np

from ..device import resolve_device
from ..errors import InvalidVolumeError, ModelCapabilityError, ModelConfigError
from ..provenance import IN_MEMORY, sha256_state_dict
from ..volume import Volume, resample_to_reference
from .config import ModelConfig
from .preprocessing import build_steps, preprocessing_steps, run_steps

PRECISIONS = ("auto", "float32", "bfloat16", "float16")


def resolve_precision(precision: str, device: Any) -> str:
    """``auto``: bfloat16 autocast on CUDA (float16 where the GPU lacks bf16), float32 on the CPU."""
    import torch

    if precision not in PRECISIONS:
        raise ModelConfigError(f"Unknown precision '{precision}'; use one of {PRECISIONS}.")
    if precision != "auto":
        return precision
    if device.type != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


class ModelAdapter:
    """A network with the device, precision, preprocessing and sliding window it runs with."""

    kind: ClassVar[str] = ""

    def __init__(self, network: Any, config: ModelConfig, device: Any = "cpu", source: str = "", sha256: str = "",
                 load_form: str = "module", precision: str = "auto") -> None:
        import torch

        if config.kind != self.kind:
            raise ModelConfigError(f"The model configuration is for a {config.kind} model but was given to "
                                   f"{type(self).__name__} ({self.kind}); set \"kind\": \"{self.kind}\" in the JSON "
                                   "or use the adapter of that kind.")
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        for parameter in self.network.parameters():
            parameter.requires_grad_(False)  # explainers need input gradients only
        self.config = config
        self.source = source
        self.sha256 = sha256
        self.load_form = load_form
        self.precision = resolve_precision(precision, self.device)
        #: MONAI Swin window attention through torch's fused kernel (same arithmetic, less time and memory)
        self.fused_attention = True
        self.preprocessing = preprocessing_steps(config)
        self._steps = build_steps(self.preprocessing)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    # ---- construction -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, device: Any = "auto", config: ModelConfig | None = None,
             precision: str = "auto") -> "ModelAdapter":
        """A state dict / checkpoint (+ JSON naming the architecture), a TorchScript file (+ JSON) or a bundle."""
        from .weights import load_weights

        loaded = load_weights(path, config)
        return cls(loaded.network, loaded.config, device, str(loaded.source), loaded.sha256, loaded.kind, precision)

    @classmethod
    def from_network(cls, network: Any, config: ModelConfig, device: Any = "cpu",
                     precision: str = "auto") -> "ModelAdapter":
        """Wrap an in-memory ``nn.Module`` (tests, notebooks); its fingerprint is taken from the parameters."""
        return cls(network, config, device, IN_MEMORY, sha256_state_dict(network.state_dict()), "module", precision)

    # ---- precision and running ------------------------------------------------------------------------------
    @property
    def torch_dtype(self):
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.precision]

    @contextlib.contextmanager
    def precision_context(self) -> Iterator[None]:
        """Autocast to :attr:`precision` (none for float32) and fused Swin attention: how this network runs."""
        import torch

        from .fused_attention import fused_window_attention

        autocast = self.precision != "float32"
        with torch.autocast(self.device.type, dtype=self.torch_dtype, enabled=autocast), \
                fused_window_attention(self.network, self.fused_attention):
            yield

    def run_network(self, x):
        """The bare network on ROI-sized input under this adapter's precision and attention (raw dtype out)."""
        with self.precision_context():
            return self.network(x)

    @property
    def sliding_window(self):
        """The window :meth:`forward` tiles large inputs with (``None``: the network sees the whole volume)."""
        if self.config.roi_size is None:
            return None
        from .sliding_window import SlidingWindow

        return SlidingWindow(tuple(self.config.roi_size), float(self.config.overlap), "gaussian")

    def forward(self, x):
        """Differentiable float32 output; a sliding window when ``x`` is not the ROI size."""
        self._check_input(x)
        window = self.sliding_window
        if window is None or tuple(x.shape[2:]) == tuple(window.roi_size):
            out = self.run_network(x)
        else:
            out = window.infer(self.run_network, x, batch_size=self.config.sw_batch_size)
        out = out.float()
        self._check_output(out, x)
        return out

    __call__ = forward

    def _check_input(self, x) -> None:
        if x.ndim != 5 or x.shape[1] != self.config.in_channels:
            raise InvalidVolumeError(
                f"Model input must be (batch, {self.config.in_channels}, D, H, W); got shape {tuple(x.shape)}."
            )

    def _check_output(self, out, x) -> None:
        """Subclasses check the output's shape against what the config's names promise."""

    # ---- volumes and tensors --------------------------------------------------------------------------------
    def preprocess(self, volume: Volume) -> Volume:
        """Input volume → model space with the configured steps; the input is not modified."""
        return run_steps(volume, self._steps, self.config.modality)

    def to_tensor(self, model_space: Volume):
        """Model-space volume → (1, 1, ...) float32 tensor in the network's axis order, on the model's device."""
        import torch

        array = model_space.array.astype(np.float32, copy=False)
        if self.config.axis_order == "xyz":
            array = array.transpose(2, 1, 0)
        return torch.from_numpy(np.ascontiguousarray(array))[None, None].to(self.device)

    def to_array(self, tensor) -> np.ndarray:
        """Inverse of :meth:`to_tensor` for a (..., D, H, W) tensor: numpy in (z, y, x) order."""
        array = tensor.detach().float().cpu().numpy()
        if self.config.axis_order == "xyz":
            array = np.swapaxes(array, -1, -3)
        return np.ascontiguousarray(array)

    def to_input_grid(self, model_space_volume: Volume, reference: Volume, interpolator: str = "linear") -> Volume:
        """Map a model-space volume (heatmap, labels) back onto the input volume's grid and geometry."""
        return resample_to_reference(model_space_volume, reference, interpolator)

    # ---- introspection --------------------------------------------------------------------------------------
    def layer(self, name: str):
        """The sub-module ``name`` (dotted, as in ``named_modules()``), for activation and gradient hooks."""
        return find_layer(self.network, name, self.source)

    def describe(self) -> dict[str, Any]:
        """Provenance entry: where the weights came from, what they are, how input was prepared, how it ran."""
        return {"source": self.source, "sha256": self.sha256, "kind": self.kind, "format": self.load_form,
                "device": str(self.device), "precision": self.precision, "fused_attention": self.fused_attention,
                "output": self.config.output, "preprocessing": [dict(s) for s in self.preprocessing],
                "config": self.config.to_dict()}


def find_layer(network: Any, name: str, source: str = ""):
    """The sub-module ``name`` of ``network``; TorchScript (no Python hooks) and unknown names are refused with a
    message that says what works instead / lists the network's layer names (close matches first)."""
    import difflib

    import torch

    if isinstance(network, torch.jit.ScriptModule):
        where = f" ({source})" if source else ""
        raise ModelCapabilityError(
            f"Layer '{name}' cannot be hooked: this model is TorchScript{where}, whose modules take no Python hooks. "
            "Methods that only need the input gradient or forward passes work (vanilla gradient, SmoothGrad, "
            "Integrated Gradients, KernelSHAP, Image-Reg-LIME); for layer methods (Grad-CAM++, LayerCAM) load the "
            "weights as a state dict with a JSON naming the architecture."
        )
    modules = {n: m for n, m in network.named_modules() if n}
    if name not in modules:
        close = difflib.get_close_matches(name, list(modules), n=5)
        names = list(modules)
        shown = ", ".join(names[:60]) + (f" ... ({len(names) - 60} more)" if len(names) > 60 else "")
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ModelCapabilityError(f"The network has no layer '{name}'.{hint} Its layers: {shown}.")
    return modules[name]
