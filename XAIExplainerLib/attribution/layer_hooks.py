"""Activations and gradients of named layers for every target from ONE forward pass (the CAM methods' engine).

A forward hook keeps each named layer's output with its graph; then one ``torch.autograd.grad`` per target takes
the gradient of that target's score with respect to all hooked activations at once (``retain_graph`` between
targets), so K targets over L layers cost one forward and K partial backward passes (down to the shallowest
hooked layer only), where pytorch-grad-cam and MONAI run the whole model once per target.

The hook hands the network a *clone* of the activation, so an in-place operation after the layer (``ReLU(inplace
=True)``) cannot change the tensor we differentiate against. Layers are found through the adapter's
:meth:`~XAIExplainerLib.models.base.ModelAdapter.layer` (or the same lookup on a bare ``nn.Module``), which
refuses TorchScript and lists the network's layer names for a name that does not exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import MethodParameterError, ModelCapabilityError
from ..models.base import find_layer
from .inputs import is_adapter

if TYPE_CHECKING:
    import torch

AUTO = "auto"


def parse_layer_names(layers: "str | Sequence[str]") -> list[str]:
    """``"block1 block2"``, ``"block1,block2"`` or a list → unique names in order (``auto`` stays ``auto``)."""
    if isinstance(layers, str):
        names = [n for n in layers.replace(",", " ").split() if n]
    else:
        names = [str(n).strip() for n in layers if str(n).strip()]
    names = list(dict.fromkeys(names))
    if not names:
        raise MethodParameterError("name at least one layer (e.g. layers='block3', or 'auto' for the last "
                                   "spatial feature map before pooling).")
    return names


def hooked_network(model: Any):
    """The ``nn.Module`` whose layers are hooked: an adapter's network or the module itself."""
    import torch

    network = model.network if is_adapter(model) else model
    if not isinstance(network, torch.nn.Module):
        raise ModelCapabilityError(f"layer methods need an nn.Module (or a model adapter) to hook, got "
                                   f"{type(model).__name__}; gradient methods (SmoothGrad) and LIME take any "
                                   "callable.")
    return network


def find_layers(model: Any, names: Sequence[str]) -> list[Any]:
    """The modules named ``names`` (through the adapter's ``layer()`` when there is one)."""
    if is_adapter(model):
        return [model.layer(n) for n in names]
    network = hooked_network(model)
    return [find_layer(network, n, "") for n in names]


def last_spatial_layer(model: Any, forward: Callable, x: "torch.Tensor") -> str:
    """``auto``: the module that finishes last with an output of the input's rank (the last spatial feature map
    before pooling), found with one forward pass without gradients."""
    import torch

    network = hooked_network(model)
    if isinstance(network, torch.jit.ScriptModule):  # the same refusal as for a named layer
        find_layer(network, AUTO, str(getattr(model, "source", "") or ""))
    finished: list[str] = []
    handles = []
    for name, module in network.named_modules():
        if not name:
            continue

        def hook(_module, _args, out, _name=name):
            if isinstance(out, torch.Tensor) and out.ndim == x.ndim and out.shape[1] > 0:
                finished.append(_name)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            forward(x)
    finally:
        for handle in handles:
            handle.remove()
    if not finished:
        raise ModelCapabilityError(f"no layer of this network returns a {x.ndim}-D feature map; name the layers "
                                   f"yourself (its layers: {', '.join(n for n, _ in network.named_modules() if n)}).")
    return finished[-1]


@dataclass
class LayerGradients:
    """Per layer: activation ``(C, *s)`` and the gradient of each target ``(K, C, *s)`` (float32/64, detached)."""

    names: list[str]
    activations: list["torch.Tensor"]
    gradients: list["torch.Tensor"]
    scores: "torch.Tensor"  # (K,) float64 on the CPU
    output: "torch.Tensor"  # (1, T) detached


def layer_gradients(model: Any, forward: Callable, x: "torch.Tensor", target: Any, names: Sequence[str],
                    skip: Sequence[bool] = ()) -> LayerGradients:
    """One forward with hooks on the named layers, then K gradients of the target scores w.r.t. them."""
    import torch

    modules = find_layers(model, names)
    captured: dict[int, "torch.Tensor"] = {}
    handles = []
    for i, module in enumerate(modules):
        def hook(_module, _args, out, _i=i):
            if not isinstance(out, torch.Tensor):
                raise ModelCapabilityError(f"layer '{names[_i]}' returns {type(out).__name__}, not a tensor; "
                                           "hook a layer that outputs a feature map.")
            if _i in captured:
                raise ModelCapabilityError(f"layer '{names[_i]}' runs more than once per forward pass (a shared "
                                           "module); hook a layer that runs once.")
            captured[_i] = out
            return out.clone()

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            inp = x.detach().requires_grad_(True)  # activations get a graph even with frozen weights
            out = forward(inp)
            missing = [names[i] for i in range(len(modules)) if i not in captured]
            if missing:
                raise ModelCapabilityError(f"layer(s) {', '.join(missing)} did not run in the forward pass; name "
                                           "layers the network uses.")
            scores = target(out)  # (1, K)
            acts = [captured[i] for i in range(len(modules))]
            grads = _target_gradients(scores, acts, skip, names)
    finally:
        for handle in handles:
            handle.remove()
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return LayerGradients(list(names), [a.detach()[0].to(dtype) for a in acts],
                          [g.to(dtype) for g in grads], scores.detach()[0].to("cpu", torch.float64),
                          out.detach())


def _target_gradients(scores: "torch.Tensor", acts: list["torch.Tensor"], skip: Sequence[bool],
                      names: Sequence[str]) -> list["torch.Tensor"]:
    """Per layer ``(K, C, *s)``: ∂score_k/∂A for every target, one partial backward per target."""
    import torch

    k_total = int(scores.shape[1])
    grads = [torch.zeros((k_total,) + tuple(a.shape[1:]), dtype=a.dtype, device=a.device) for a in acts]
    todo = [k for k in range(k_total) if not (skip and skip[k])]
    for j, k in enumerate(todo):
        if not scores.requires_grad:
            raise ModelCapabilityError("the score does not depend differentiably on the hooked layers (was the "
                                       "model run under torch.no_grad?); layer methods need autograd.")
        parts = torch.autograd.grad(scores[:, k].sum(), acts, retain_graph=j < len(todo) - 1, allow_unused=True)
        for layer, g in enumerate(parts):
            if g is None:
                raise ModelCapabilityError(f"the score does not depend on layer '{names[layer]}' (it is not on the "
                                           "path to the output); name a layer the output is computed from.")
            grads[layer][k] = g[0]
    return grads


__all__ = ["AUTO", "LayerGradients", "find_layers", "hooked_network", "last_spatial_layer", "layer_gradients",
           "parse_layer_names"]
