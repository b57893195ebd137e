"""Errors that must fail one item, not a whole run, and the one-line form of any error.

* :class:`NonFiniteError` — a NaN or infinite number where the computation needs finite ones: a
  training loss (:func:`dualreal.engine.trainer.train` stops the case's training and names the
  step), the latents of a denoising step (:func:`finite_latents_callback`), or generated frames
  (:func:`dualreal.engine.protocol.frames_to_uint8`). The run loop turns it into a ``failed``
  record for that case or video and goes on with the others; a non-finite video never becomes an
  mp4 recorded ``ok``.
* :func:`cause_line` — an exception reduced to one line that keeps its cause: terminal escape codes
  removed, the line that says *why* chosen from a multi-line upstream message (torch's weights-only
  refusal puts it after two paragraphs of advice), never cut in the middle. Every "one-line error"
  of the project (failed rows and records, refused weight files) is built with it.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

__all__ = ["NonFiniteError", "check_finite", "finite_latents_callback", "cause_line"]


class NonFiniteError(FloatingPointError):
    """A NaN or infinite value where finite numbers are needed; the message says where (which
    loss and training step, which denoising step, which frames)."""


def check_finite(tensor: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` unless every value of ``tensor`` is finite.

    Args:
        tensor: any floating-point tensor (other dtypes are finite by construction and pass).
        what: how the message names the tensor (``"latents at denoising step 3 of 10"``).

    Raises:
        NonFiniteError: ``"<what> hold 12 NaN and 0 infinite values of 4096"`` (``"<what> is nan"``
            for a single number).
    """
    if not tensor.is_floating_point():
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    if tensor.numel() == 1:
        raise NonFiniteError(f"{what} is {float(tensor.reshape(()))}")
    nan = int(torch.isnan(tensor).sum())
    inf = int(tensor.numel() - int(finite.sum()) - nan)
    raise NonFiniteError(f"{what} hold {nan} NaN and {inf} infinite values of {tensor.numel()}")


def finite_latents_callback(num_inference_steps: int,
                            then: Callable[..., dict[str, Any]] | None = None) -> Callable[..., dict[str, Any]]:
    """A diffusers ``callback_on_step_end`` that stops sampling at the first denoising step whose
    latents are not finite (the video would decode to NaN frames, which uint8 conversion turns
    into black).

    Args:
        num_inference_steps: the call's step count (for the message).
        then: a callback of the caller's to run afterwards (its return value is returned); it
            must ask for ``latents`` too (``callback_on_step_end_tensor_inputs=["latents"]``, the
            pipeline's default).

    Returns:
        ``callback(pipe, step_index, timestep, callback_kwargs) -> callback_kwargs``.

    Raises (when called):
        NonFiniteError: ``"latents at denoising step 3 of 10 (t = 667) hold …"``.
    """

    def callback(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        latents = callback_kwargs.get("latents")
        if latents is not None:
            check_finite(latents, f"latents at denoising step {i + 1} of {num_inference_steps} (t = {int(t)})")
        return then(pipe, i, t, callback_kwargs) if then is not None else callback_kwargs

    return callback


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: A line that states the reason of a wrapped error: ``WeightsUnpickler error: …``,
#: ``RuntimeError: …``, ``Caused by: …``.
_CAUSE = re.compile(r"^(?:(?:[A-Za-z_][\w.]*\s)?[\w.]*(?:Error|Exception|error)|Caused by)\s*:\s*(?P<why>\S.*)$")


def cause_line(exc: BaseException | str, *, with_type: bool = True) -> str:
    """One line that says why ``exc`` happened, whole.

    Rules: terminal escape codes (``\\x1b[1m``) are removed; among the message's non-empty lines,
    the last one that states a wrapped cause (``WeightsUnpickler error: Unsupported global: …``,
    ``RuntimeError: …``) is the cause — its prefix dropped — else the first line is (with the lines
    after it when it only introduces them, ending in ``:``); an exception
    raised ``from`` another (``__cause__``) adds that one's cause line after ``←``; whitespace runs
    become single spaces; nothing is cut.

    Args:
        exc: an exception, or a message.
        with_type: prefix the exception's class name (``UnpicklingError: …``); messages of
            ``ValueError`` subclasses that already name their file (``MediaError``,
            ``DataError``) read better without, and their callers pass ``False``.

    Returns:
        The line (``"<Type>: <why>"``); ``"<Type>"`` for an exception without a message.
    """
    text = exc if isinstance(exc, str) else str(exc)
    lines = [" ".join(_ANSI.sub("", ln).split()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    why = ""
    for ln in lines[1:]:
        m = _CAUSE.match(ln)
        if m:
            why = m.group("why")
    if not why and lines:
        why = lines[0]
        if why.endswith(":"):  # an introduction ("Error(s) in loading state_dict for X:"): the lines after it say why
            why = " ".join(lines)
    if isinstance(exc, BaseException):
        inner = exc.__cause__
        if inner is not None:
            inner_line = cause_line(inner)
            if inner_line and inner_line not in why:
                why = f"{why} ← {inner_line}" if why else inner_line
        if with_type:
            name = type(exc).__name__
            return f"{name}: {why}" if why else name
    return why
