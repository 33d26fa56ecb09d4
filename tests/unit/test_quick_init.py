"""``quick_init`` builds the same instances as the ``__init__`` that ``dataclass(frozen=True)`` generates, and
refuses the classes it could not copy faithfully."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
from dataclasses import FrozenInstanceError, InitVar, dataclass, field, replace
from typing import Any

import pytest

import grantkeeper
from grantkeeper.core.quick_init import quick_init

CALLS: list[str] = []


def _pair(**options: Any) -> tuple[type, type]:
    """The same frozen dataclass twice, the second with ``quick_init``."""

    def make() -> type:
        @dataclass(frozen=True, **options)
        class Sample:
            a: int
            b: list[int] = field(default_factory=list)
            c: str = "c"
            d: int = field(default=4, kw_only=True)

        return Sample

    return make(), quick_init(make())


def test_instances_equal_the_generated_init() -> None:
    plain, quick = _pair()
    for args, kwargs in [((1,), {}), ((1, [2], "x"), {"d": 9}), ((), {"a": 3, "c": "y"})]:
        expected, got = plain(*args, **kwargs), quick(*args, **kwargs)
        assert vars(got) == vars(expected)
        assert list(vars(got)) == list(vars(expected))  # field order too (it is the repr's and asdict's)
        assert repr(got).replace(quick.__qualname__, "") == repr(expected).replace(plain.__qualname__, "")


def test_the_signature_is_the_generated_one() -> None:
    plain, quick = _pair()
    assert str(inspect.signature(quick)) == str(inspect.signature(plain))
    assert quick.__init__.__annotations__ == plain.__init__.__annotations__
    assert quick.__init__.__qualname__.endswith("Sample.__init__")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), ((1, [], "c", 4), {}), ((1,), {"e": 1}), ((1,), {"a": 2})],
    ids=["missing", "too-many", "unknown", "twice"],
)
def test_bad_arguments_fail_as_before(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    plain, quick = _pair()
    with pytest.raises(TypeError) as expected:
        plain(*args, **kwargs)
    with pytest.raises(TypeError) as got:
        quick(*args, **kwargs)
    assert str(got.value).split("()", 1)[1] == str(expected.value).split("()", 1)[1]


def test_each_instance_gets_its_own_factory_value() -> None:
    _, quick = _pair()
    first, second = quick(1), quick(1)
    assert first.b == []
    assert first.b is not second.b
    given = [7]
    assert quick(1, given).b is given


def test_still_frozen_hashable_and_replaceable() -> None:
    plain, quick = _pair(eq=True)
    instance = quick(1, (), "x")  # a hashable value in the list field's place: hash covers every field
    with pytest.raises(FrozenInstanceError):
        instance.a = 2  # type: ignore[misc]
    assert hash(instance) == hash(quick(1, (), "x"))
    assert instance == quick(1, (), "x")
    assert instance != quick(2, (), "x")
    changed = replace(instance, c="z")
    assert type(changed) is quick
    assert vars(changed) == vars(plain(1, (), "z"))


def test_post_init_runs() -> None:
    @quick_init
    @dataclass(frozen=True)
    class Checked:
        value: int

        def __post_init__(self) -> None:
            if self.value < 0:
                raise ValueError("negative")
            CALLS.append(f"checked {self.value}")

    Checked(1)
    assert CALLS[-1] == "checked 1"
    with pytest.raises(ValueError, match="negative"):
        Checked(-1)


def test_refuses_what_it_cannot_copy() -> None:
    with pytest.raises(TypeError, match="frozen dataclasses"):

        @quick_init
        class NotADataclass:
            pass

    with pytest.raises(TypeError, match="frozen dataclasses"):

        @quick_init
        @dataclass
        class Mutable:
            value: int

    with pytest.raises(TypeError, match="slots"):

        @quick_init
        @dataclass(frozen=True, slots=True)
        class Slotted:
            value: int

    with pytest.raises(TypeError, match="InitVar"):

        @quick_init
        @dataclass(frozen=True)
        class WithInitVar:
            value: int
            seed: InitVar[int] = 0

    with pytest.raises(TypeError, match="every field"):

        @quick_init
        @dataclass(frozen=True)
        class Hidden:
            value: int
            derived: int = field(default=0, init=False)


def _decorated_classes() -> list[type]:
    """Every class in the package that uses ``quick_init`` (its ``__init__`` is ours, not the dataclass's)."""
    found = []
    for module_info in pkgutil.walk_packages(grantkeeper.__path__, "grantkeeper."):
        if ".migrations" in module_info.name or module_info.name.endswith("__main__"):
            continue
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            init = getattr(value, "__init__", None)
            if (
                isinstance(value, type)
                and value.__module__ == module.__name__
                and dataclasses.is_dataclass(value)
                and getattr(init, "__code__", None) is not None
                and init.__code__.co_filename.startswith("<quick_init ")
            ):
                found.append(value)
    return found


def test_the_refresh_path_values_use_it_and_keep_their_signatures() -> None:
    """The classes named in ``quick_init``'s docstring are decorated, and each takes exactly its fields."""
    names = {cls.__name__ for cls in _decorated_classes()}
    assert {"ConnectionState", "Outcome", "TokenSet", "Transition", "AttemptCommit", "AttemptResult"} <= names
    for cls in _decorated_classes():
        parameters = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in parameters] == [f.name for f in dataclasses.fields(cls)], cls
        for parameter, f in zip(parameters, dataclasses.fields(cls), strict=True):
            if f.default is not dataclasses.MISSING:
                assert parameter.default is f.default, (cls, f.name)
            elif f.default_factory is dataclasses.MISSING:
                assert parameter.default is inspect.Parameter.empty, (cls, f.name)
            assert (parameter.kind is inspect.Parameter.KEYWORD_ONLY) == f.kw_only, (cls, f.name)
