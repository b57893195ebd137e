"""DualReal: adaptive joint training for lossless identity-motion fusion in video customisation
(Wang et al., ICCV 2025), on diffusers' CogVideoX."""

from dualreal.engine.backbone import Backbone, BackboneError, load_backbone
from dualreal.engine.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneError",
    "load_backbone",
    "CaseData",
    "CustomizationMethod",
    "GeneratedVideo",
    "GenerationSettings",
    "__version__",
]
