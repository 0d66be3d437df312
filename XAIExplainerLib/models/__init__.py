"""Model adapters: configuration, weights loading, preprocessing and inference, one adapter per model kind."""
from .base import ModelAdapter
from .config import ModelConfig
from .outputs import ClassifierModel, ImageToImageModel, RegressionModel
from .segmentation import SegmentationModel, SegmentationResult

ADAPTERS = {cls.kind: cls for cls in (SegmentationModel, RegressionModel, ImageToImageModel, ClassifierModel)}

__all__ = ["ADAPTERS", "ClassifierModel", "ImageToImageModel", "ModelAdapter", "ModelConfig", "RegressionModel",
           "SegmentationModel", "SegmentationResult"]
