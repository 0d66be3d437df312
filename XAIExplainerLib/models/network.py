"""Build the MONAI network that a :class:`ModelConfig` describes."""
from __future__ import annotations

import inspect

from ..errors import ModelConfigError
from .config import ModelConfig


def build_network(config: ModelConfig):
    """A MONAI ``SwinUNETR`` with the configured sizes (``img_size`` is passed only to MONAI versions needing it)."""
    from monai.networks.nets import SwinUNETR

    if config.architecture != "SwinUNETR":
        raise ModelConfigError(
            f"Architecture '{config.architecture}' is not built by XAIExplainer; use SwinUNETR, or export the network "
            "as TorchScript, which carries its own architecture."
        )

    kwargs = dict(
        in_channels=config.in_channels,
        out_channels=config.num_classes,
        feature_size=config.feature_size,
        depths=config.depths,
        num_heads=config.num_heads,
        use_v2=config.use_v2,
        spatial_dims=3,
    )
    if "img_size" in inspect.signature(SwinUNETR.__init__).parameters:
        kwargs["img_size"] = config.roi_size
    return SwinUNETR(**kwargs)
