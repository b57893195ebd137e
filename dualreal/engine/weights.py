"""Reading weight files without unpickling code.

``.pth`` / ``.bin`` checkpoints of upstream projects are read with ``torch.load(weights_only=True)``,
never ``weights_only=False``. Some of them keep small non-tensor metadata beside the tensors — a
numpy scalar (``"epoch": np.float64(3.0)``), a numpy array or dtype — which torch's weights-only
unpickler refuses unless the type is allow-listed (``torch.serialization.add_safe_globals``). The
types of :func:`safe_checkpoint_globals` are allowed, scoped to the one read
(``torch.serialization.safe_globals``, the context-manager form of ``add_safe_globals``): they
rebuild plain data and can run no code. Anything else is refused with its cause and the file named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from dualreal.engine.errors import cause_line

__all__ = ["WeightsFileError", "safe_checkpoint_globals", "checkpoint_metadata_allowed", "load_weights_only"]


class WeightsFileError(ValueError):
    """A weight file that cannot be used; the message names the file and says why, on one line."""


def safe_checkpoint_globals() -> list[Any]:
    """The non-tensor types a checkpoint's metadata may hold: numpy scalars, arrays and dtypes.

    ``numpy.core`` moved to ``numpy._core`` in numpy 2; pickles name whichever module wrote them,
    so both spellings are allowed when they exist.
    """
    import numpy as np

    allowed: list[Any] = [np.ndarray, np.dtype]
    for module_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
        except ImportError:
            continue
        for attr in ("scalar", "_reconstruct"):
            obj = getattr(module, attr, None)
            if obj is not None:
                allowed.append((obj, f"{module_name}.{attr}"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25: one class per dtype (np.dtypes.Float64DType, …)
        allowed += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and n != "StringDType"]
    return allowed


def checkpoint_metadata_allowed():
    """A context in which ``torch.load(weights_only=True)`` — also inside a library (open_clip's
    ``load_checkpoint``) — accepts :func:`safe_checkpoint_globals`."""
    return torch.serialization.safe_globals(safe_checkpoint_globals())


def load_weights_only(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`safe_checkpoint_globals` allowed.

    Raises:
        WeightsFileError: missing file, a type outside the allow-list (the unpickler's cause line,
            which names the type), a truncated or foreign file — ``"<path>: <cause>"``.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(f"{path}: file not found")
    try:
        with checkpoint_metadata_allowed():
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle refusals, truncated files and foreign formats all mean "unusable"
        raise WeightsFileError(f"{path}: cannot be read as a weights-only checkpoint ({cause_line(exc)})") from None
