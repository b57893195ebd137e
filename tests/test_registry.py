"""The method registry's behaviour: every name builds the class its target names with its overrides
applied (and the caller's on top), unknown names get suggestions, duplicates are refused, wildcard
listing, and a new method is one ``register`` line."""

import importlib

import pytest

from benchmark import registry
from benchmark.registry import METHODS, UnknownMethodError, create_method, get_spec, list_methods, register
from dualreal.engine.protocol import CustomizationMethod


def _target_class(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _as_json(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_name_builds_its_target_with_its_overrides(tiny_backbone, name):
    spec = METHODS[name]
    cls = _target_class(spec.target)
    method = create_method(name, tiny_backbone)
    assert type(method) is cls and issubclass(cls, CustomizationMethod)
    assert method.name == name and method.describe()["method"] == name
    # the typed config, resolved for the backbone, under the one attribute every method uses
    assert isinstance(method.config, cls.config_class) and method.config.resolve(tiny_backbone) == method.config
    for key, value in spec.overrides.items():
        assert _as_json(getattr(method.config, key)) == _as_json(value), f"{name}: {key}"
    # every other option is what the overrides alone resolve to (budget="equal" sets steps and
    # batches through resolve, baselines/common.py): the registry passes nothing else
    default = cls.config_class(**spec.overrides).resolve(tiny_backbone)
    others = [f for f in cls.config_class.field_names() if f not in spec.overrides]
    assert {f: getattr(method.config, f) for f in others} == {f: getattr(default, f) for f in others}


def test_caller_options_override_the_registry_and_unknown_options_are_refused(tiny_backbone):
    assert METHODS["dualreal-groups-2"].overrides == {"num_groups": 2}
    assert create_method("dualreal-groups-2", tiny_backbone, num_groups=1).config.num_groups == 1
    assert create_method("lora", tiny_backbone, train_steps=7).config.train_steps == 7
    with pytest.raises(ValueError, match=r"unknown LoRAConfig option\(s\) \['ranks'\]; valid options: .*\brank\b"):
        create_method("lora", tiny_backbone, ranks=3)
    with pytest.raises(ValueError, match=r"unknown MethodConfig option\(s\) \['train_steps'\]"):
        create_method("cogvideox", tiny_backbone, train_steps=3)  # nothing to train: refused, not ignored


def test_unknown_method_suggests_close_names_and_lists_all():
    with pytest.raises(UnknownMethodError) as err:
        get_spec("dualreal-grups-2")
    text = str(err.value)
    assert "Did you mean dualreal-groups-2" in text
    listed = text.split("Known methods: ")[1].split(", ")
    assert listed == sorted(METHODS)
    with pytest.raises(UnknownMethodError) as err:
        get_spec("zzzz")
    assert "Did you mean" not in str(err.value)


def test_duplicate_registration_is_an_error_and_changes_nothing():
    before = dict(METHODS)
    name = next(iter(METHODS))
    with pytest.raises(ValueError, match=f"method '{name}' is already registered"):
        register(name, "baselines.cogvideox:CogVideoXMethod")
    assert METHODS == before


def test_wildcard_listing_matches_the_registry():
    assert list_methods() == sorted(METHODS)
    groups = list_methods("dualreal-groups-*")
    assert groups == sorted(n for n in METHODS if n.startswith("dualreal-groups-")) and groups
    assert list_methods("no-such-*") == []


def test_a_new_method_is_one_register_line(tiny_backbone, monkeypatch):
    monkeypatch.setattr(registry, "METHODS", dict(METHODS))
    register("dualreal-s05", "dualreal.method:DualRealMethod", "fusion scale 0.5", fusion_scale=0.5)
    assert "dualreal-s05" in list_methods("dualreal-s*")
    method = create_method("dualreal-s05", tiny_backbone)
    assert method.name == "dualreal-s05" and method.config.fusion_scale == 0.5
    assert "dualreal-s05" not in METHODS  # registered in this test's copy of the table only
