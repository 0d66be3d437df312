"""Model adapters: configuration, weights loading, preprocessing and sliding-window inference."""
from .config import ModelConfig
from .segmentation import SegmentationModel, SegmentationResult

__all__ = ["ModelConfig", "SegmentationModel", "SegmentationResult"]
