import pytest

from benchmark.registry import METHODS, UnknownMethodError, create_method, get_spec, list_methods, register


def test_unknown_method_suggests_close_names():
    with pytest.raises(UnknownMethodError, match=r"Did you mean cogvideox\?.*Known methods: .*cogvideox"):
        get_spec("cogvidex")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register("cogvideox", "baselines.cogvideox:CogVideoXMethod")


def test_wildcard_listing():
    assert "cogvideox" in list_methods("cog*")
    assert list_methods("no-such-*") == []


def test_every_registered_target_imports_and_is_a_method():
    import importlib

    from dualreal.engine.protocol import CustomizationMethod

    for spec in METHODS.values():
        module, _, attr = spec.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert issubclass(cls, CustomizationMethod), spec.name


def test_create_method_sets_registry_name(tiny_backbone):
    m = create_method("cogvideox", tiny_backbone)
    assert m.name == "cogvideox" and m.describe()["method"] == "cogvideox"
