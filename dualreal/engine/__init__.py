"""The engine every method runs on — not part of DualReal itself.

DualReal (:mod:`dualreal.adapters`, :mod:`dualreal.controller`, :mod:`dualreal.config`,
:mod:`dualreal.pipeline`, :mod:`dualreal.method`) and every baseline are built on these pieces:

* :mod:`~dualreal.engine.backbone` — the one CogVideoX loader (pretrained folders, random-weights presets);
* :mod:`~dualreal.engine.protocol` — the method protocol (``fit`` a case, ``generate`` a video);
* :mod:`~dualreal.engine.image_encoder` — the reference-image encoder (OpenCLIP);
* :mod:`~dualreal.engine.trainer` — the one customisation trainer (data, checkpoint I/O, loop);
* :mod:`~dualreal.engine.config` — what every training configuration shares.

Imports point one way: the engine never imports the method modules of :mod:`dualreal`, nor
``baselines`` or ``benchmark``.
"""
