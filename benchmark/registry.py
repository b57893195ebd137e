"""Method registry: names map to lazy ``"module:attr"`` constructors plus config overrides.

Adding a method is one module and one line in :data:`METHODS`. Ablations are short config
overrides of one constructor (timm's entry-function style), never a code edit.

Methods from outside this package (docs/EXTERNAL.md, "A method as a plugin"):

* a **target** ``package.module:Class`` given as the method name (``dualbench run --method
  my_pkg.my_module:MyMethod``) is imported from the Python path; its records are filed under
  ``my_pkg.my_module.MyMethod`` (the target with ``:`` → ``.``, a portable folder name);
* an installed distribution's **entry points** in the group :data:`PLUGIN_GROUP`
  (``dualbench.methods``; ``name = "package.module:Class"``) add registry names, listed by
  ``dualbench list`` with the distribution they come from. A built-in name always wins: an entry
  point that shadows one is ignored and reported (:func:`plugin_problems`), as is a name two
  distributions both claim (then using it is an error naming both).

The class a target names must subclass :class:`dualreal.engine.protocol.CustomizationMethod`;
each way a target can be wrong (missing module, error while importing it, missing attribute,
not a method class) is one :class:`MethodLoadError` saying which.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.metadata
import inspect
import re
import traceback
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MethodSpec",
    "METHODS",
    "PLUGIN_GROUP",
    "register",
    "get_spec",
    "list_methods",
    "all_specs",
    "plugin_specs",
    "plugin_problems",
    "target_name",
    "load_method_class",
    "create_method",
    "UnknownMethodError",
    "MethodLoadError",
]

#: Entry-point group of installed method plugins (``[project.entry-points."dualbench.methods"]``).
PLUGIN_GROUP = "dualbench.methods"


class UnknownMethodError(KeyError):
    """An unknown method name; the message suggests close names and lists all of them."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0])


class MethodLoadError(ValueError):
    """A method target that cannot be used: malformed, module missing, import failing inside the
    plugin, attribute missing, not a :class:`~dualreal.engine.protocol.CustomizationMethod` subclass,
    or a plugin name claimed twice. The message says which and names the target."""


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry.

    Attributes:
        name: registry name used on the command line.
        target: ``"package.module:ClassName"``, imported only when the method is created.
        overrides: keyword arguments passed to the constructor (ablation switches).
        summary: one line for ``dualbench list``.
        origin: ``"built-in"``, ``"plugin <distribution> <version>"`` (an entry point) or
            ``"target"`` (a ``package.module:Class`` given on the command line).
    """

    name: str
    target: str
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    origin: str = "built-in"


METHODS: dict[str, MethodSpec] = {}


def register(name: str, target: str, summary: str = "", **overrides: Any) -> MethodSpec:
    """Add a method. Raises ``ValueError`` on a duplicate name."""
    if name in METHODS:
        raise ValueError(f"method {name!r} is already registered (as {METHODS[name].target})")
    spec = MethodSpec(name=name, target=target, overrides=overrides, summary=summary)
    METHODS[name] = spec
    return spec


# --- the registry: one line per method -------------------------------------------------------
register("cogvideox", "baselines.cogvideox:CogVideoXMethod", "the backbone as is, no customisation")
register("dualreal", "dualreal.method:DualRealMethod", "DualReal: joint training, gradient mask, StageBlender n=7")
register("dualreal-no-joint", "dualreal.method:DualRealMethod", "w/o Dual-aware Adaptation: adapters trained apart, fixed 0.1/0.1", joint=False, use_controller=False)
register("dualreal-no-controller", "dualreal.method:DualRealMethod", "w/o StageBlender: joint training, fixed w_id = w_mo = 0.1", use_controller=False)
register("dualreal-groups-1", "dualreal.method:DualRealMethod", "StageBlender with n=1 (w/o weight groups)", num_groups=1)
register("dualreal-groups-2", "dualreal.method:DualRealMethod", "StageBlender with n=2 groups", num_groups=2)
register("dualreal-groups-7", "dualreal.method:DualRealMethod", "StageBlender with n=7 groups (= dualreal)", num_groups=7)
register("dualreal-groups-42", "dualreal.method:DualRealMethod", "StageBlender with n=42 (one weight per block)", num_groups=42)
register("dualreal-no-mask", "dualreal.method:DualRealMethod", "joint training without the gradient mask", gradient_mask=False)
register("lora", "baselines.lora:LoRAMethod", "identity + motion LoRAs as two peft adapters (true sum)", combine="adapters")
register("lora-paper-merge", "baselines.lora:LoRAMethod", "the paper's LoRA row: key-wise 0.5/0.5 merge of A and B", combine="paper-merge")
register("lora-joint", "baselines.lora:LoRAMethod", "one LoRA trained with DualReal's Bernoulli image/clip sampler", combine="joint")
register("dreamvideo", "baselines.dreamvideo:DreamVideoMethod", "DreamVideo-style: identity and motion adapters trained apart")
register("motionbooth", "baselines.motionbooth:MotionBoothMethod", "MotionBooth-style: masked + attention losses, flow-box steering")
register("motionbooth-nobox", "baselines.motionbooth:MotionBoothMethod", "MotionBooth-style without box steering (what steering adds)", box_source="off")
register("lora-equal", "baselines.lora:LoRAMethod", "lora with DualReal's training budget (500 + 500 steps)", combine="adapters", budget="equal")
register("dreamvideo-equal", "baselines.dreamvideo:DreamVideoMethod", "dreamvideo with DualReal's training budget", budget="equal")
register("motionbooth-equal", "baselines.motionbooth:MotionBoothMethod", "motionbooth with DualReal's training budget", budget="equal")


_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def target_name(target: str) -> str:
    """The records' method name of a target: ``my_pkg.my_module:MyMethod`` → ``my_pkg.my_module.MyMethod``.

    Raises:
        MethodLoadError: not of the form ``package.module:Class``.
    """
    if not _TARGET.match(target):
        raise MethodLoadError(
            f"method target {target!r} is malformed: expected 'package.module:Class' (Python names, one ':')"
        )
    return target.replace(":", ".")


def _scan_plugins() -> tuple[dict[str, MethodSpec], list[str]]:
    """Installed entry points of :data:`PLUGIN_GROUP` → specs, and the problems found."""
    found: dict[str, list[MethodSpec]] = {}
    problems: list[str] = []
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "an unknown distribution"
        origin = f"plugin {dist}"
        if ep.name in METHODS:
            problems.append(f"entry point {ep.name!r} = {ep.value!r} of {dist} shadows the built-in method "
                            f"{ep.name!r} ({METHODS[ep.name].target}) and is ignored; rename it in that "
                            f"distribution, or run it as --method {ep.value}")
            continue
        if not ep.name or "/" in ep.name or "\\" in ep.name or ":" in ep.name or ep.name.startswith("."):
            problems.append(f"entry point {ep.name!r} of {dist} is ignored: a method name is a folder name "
                            "(no '/', '\\', ':' or leading '.')")
            continue
        found.setdefault(ep.name, []).append(MethodSpec(name=ep.name, target=ep.value, origin=origin,
                                                        summary=f"{ep.value} ({origin})"))
    specs = {}
    for name, candidates in found.items():
        if len(candidates) > 1:
            problems.append(f"method {name!r} is claimed by several plugins ("
                            + ", ".join(f"{c.target} from {c.origin}" for c in candidates)
                            + "); it is ambiguous and not available by that name")
            continue
        specs[name] = candidates[0]
    return specs, problems


def plugin_specs() -> dict[str, MethodSpec]:
    """Methods of the installed plugins (entry points in :data:`PLUGIN_GROUP`), by name; nothing is
    imported. Names that shadow a built-in or that two plugins claim are left out
    (:func:`plugin_problems`)."""
    return _scan_plugins()[0]


def plugin_problems() -> list[str]:
    """One line per ignored plugin entry point (shadowing a built-in, claimed twice, bad name)."""
    return _scan_plugins()[1]


def all_specs() -> dict[str, MethodSpec]:
    """Every method usable by name: the built-ins, then the installed plugins."""
    return {**METHODS, **plugin_specs()}


def get_spec(name: str) -> MethodSpec:
    """The spec for ``name``: a built-in, an installed plugin's entry point, or a
    ``package.module:Class`` target (nothing is imported here).

    Raises:
        UnknownMethodError: unknown name (close names suggested, all listed).
        MethodLoadError: a malformed target, or a plugin name two distributions claim.
    """
    if name in METHODS:
        return METHODS[name]
    if ":" in name:
        return MethodSpec(name=target_name(name), target=name, origin="target", summary=name)
    plugins, problems = _scan_plugins()
    if name in plugins:
        return plugins[name]
    ambiguous = [p for p in problems if p.startswith(f"method {name!r} is claimed")]
    if ambiguous:
        raise MethodLoadError(ambiguous[0])
    known = sorted({*METHODS, *plugins})
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UnknownMethodError(
        f"unknown method {name!r}.{hint} (A method of your own package runs as package.module:Class.) "
        f"Known methods: {', '.join(known)}"
    )


def list_methods(pattern: str = "*") -> list[str]:
    """Names usable by name (built-ins and installed plugins) matching a shell wildcard
    (``"dualreal*"``), sorted."""
    return sorted(n for n in all_specs() if fnmatch.fnmatch(n, pattern))


def _where(exc: BaseException) -> str:
    """`` (file.py:12)``: where an exception was raised, for a one-line message."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def load_method_class(spec: MethodSpec) -> type:
    """Import the class ``spec.target`` names and check it is a method.

    Returns:
        A concrete subclass of :class:`dualreal.engine.protocol.CustomizationMethod`.

    Raises:
        MethodLoadError: one message per cause — malformed target; the module does not exist (is
            the package installed or on ``PYTHONPATH``?); importing it raised (the exception, its
            file and line); the attribute is missing (the module's method classes listed); the
            object is not a ``CustomizationMethod`` subclass, or is abstract (``generate`` missing).
    """
    from dualreal.engine.protocol import CustomizationMethod

    target_name(spec.target)  # the form is checked first
    module_name, _, attr = spec.target.partition(":")
    where = f"method {spec.name!r} (target {spec.target})"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise MethodLoadError(f"{where}: no module named {exc.name!r}; install the package that "
                                  "provides it, or put it on PYTHONPATH") from None
        raise MethodLoadError(f"{where}: importing {module_name!r} failed: ModuleNotFoundError: {exc}"
                              f"{_where(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - any error inside the plugin's module
        raise MethodLoadError(f"{where}: importing {module_name!r} failed: {exc.__class__.__name__}: {exc}"
                              f"{_where(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            methods = sorted(n for n, v in vars(module).items()
                             if inspect.isclass(v) and issubclass(v, CustomizationMethod) and v.__module__ == module.__name__)
            defined = f"its method classes: {', '.join(methods)}" if methods else "it defines no CustomizationMethod subclass"
            raise MethodLoadError(f"{where}: module {module_name!r} ({getattr(module, '__file__', '?')}) has no "
                                  f"attribute {attr!r}; {defined}")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, CustomizationMethod)):
        kind = f"the class {obj.__module__}.{obj.__qualname__}" if inspect.isclass(obj) else f"a {type(obj).__name__}"
        raise MethodLoadError(f"{where}: {attr!r} is {kind}, not a subclass of "
                              "dualreal.engine.protocol.CustomizationMethod (the method protocol)")
    if inspect.isabstract(obj):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise MethodLoadError(f"{where}: {obj.__qualname__} does not implement {missing}")
    return obj


def create_method(name: str, backbone, **config: Any):
    """Import and build method ``name`` (:func:`get_spec`) on ``backbone``; ``config`` overrides the
    registry's. The method's ``name`` is the spec's (a target's records name, for a target).

    Raises:
        UnknownMethodError, MethodLoadError: see :func:`get_spec`, :func:`load_method_class`.
        ValueError: an option the method's config does not have.
    """
    spec = get_spec(name)
    cls = load_method_class(spec)
    method = cls(backbone, **{**spec.overrides, **config})
    method.name = spec.name
    return method
