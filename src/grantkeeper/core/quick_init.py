"""A faster ``__init__`` for the frozen dataclasses the refresh path builds for every attempt.

The ``__init__`` that ``dataclass(frozen=True)`` generates sets each field through ``object.__setattr__``
(its own ``__setattr__`` refuses), which costs about four times a plain assignment: 0.53 µs for six fields
against 0.13. A refresh builds about ten such values (the outcome, its tokens, the new state, the transition,
the attempt's record, commit and result...): about 3 % of the CPU a refresh costs (121 against 118 µs,
``docs/benchmarks.md``, thirteenth session). ``quick_init`` keeps them frozen and swaps only the
constructor for one that sets the instance's ``__dict__`` at once, as ``adapters.db.hotpath.built`` does for
rows read back.

Everything else the dataclass made stays as it was: equality, hashing, ``repr``, ``replace`` (which calls the
new ``__init__``), assignment refused. The signature is the generated one's: the same parameters, defaults
and keyword-only fields, so a missing or unknown argument fails as before; ``default_factory`` gives each
instance its own value and ``__post_init__`` runs. A class this cannot copy faithfully (slots, ``InitVar``,
fields left out of ``__init__``) is refused when it is decorated, never mis-built later.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, TypeVar

__all__ = ["quick_init"]

_T = TypeVar("_T")


class _Factory:
    """The default of a parameter whose field has a ``default_factory`` (shown as dataclasses shows it)."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen dataclass an ``__init__`` that sets all its fields at once (put it above
    ``@dataclass(frozen=True)``)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise TypeError(f"quick_init is for frozen dataclasses; {cls.__name__} is not one")
    if "__slots__" in cls.__dict__:
        raise TypeError(f"quick_init needs an instance __dict__; {cls.__name__} has slots")
    declared = cls.__dict__["__dataclass_fields__"].values()
    if any(f._field_type is dataclasses._FIELD_INITVAR for f in declared):  # type: ignore[attr-defined]
        raise TypeError(f"quick_init cannot copy the InitVar handling of {cls.__name__}")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(not f.init for f in fields):
        raise TypeError(f"quick_init needs every field of {cls.__name__} in __init__")
    # the names the body uses are the arguments of an outer function, as ``dataclasses`` does it, so that
    # the ``__init__`` keeps the class's module as its globals (its annotations resolve as before)
    closure: dict[str, Any] = {"_set": object.__setattr__, "_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    items: list[str] = []
    for f in fields:
        value = f.name
        if f.default is not dataclasses.MISSING:
            closure[f"_default_{f.name}"] = f.default
            parameter = f"{f.name}=_default_{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            closure[f"_factory_{f.name}"] = f.default_factory
            parameter = f"{f.name}=_FACTORY"
            value = f"_factory_{f.name}() if {f.name} is _FACTORY else {f.name}"
        else:
            parameter = f.name
        (keyword if f.kw_only else positional).append(parameter)
        items.append(f"{f.name!r}: {value}")
    signature = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = (
        f"def __make_init__({', '.join(closure)}):\n"
        f"  def __init__({signature}):\n"
        f"    _set(self, '__dict__', {{{', '.join(items)}}})\n"
        + ("    self.__post_init__()\n" if hasattr(cls, "__post_init__") else "")
        + "  return __init__\n"
    )
    made: dict[str, Any] = {}
    module = sys.modules.get(cls.__module__)
    code = compile(source, f"<quick_init {cls.__qualname__}>", "exec")  # the name tracebacks show
    exec(code, module.__dict__ if module else {}, made)  # noqa: S102 - built from field names only
    init = made["__make_init__"](**closure)
    generated = cls.__init__
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(generated.__annotations__)
    init.__doc__ = generated.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
