"""DualReal: adaptive joint training for lossless identity-motion fusion in video customisation
(Wang et al., ICCV 2025), on diffusers' CogVideoX."""

from dualreal.backbone import Backbone, BackboneError, load_backbone
from dualreal.protocol import CaseData, CustomizationMethod, GeneratedVideo, GenerationSettings

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
