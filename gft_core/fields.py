"""Field metadata of the run configuration: FieldSpec, the `setting(...)` dataclass-field helper,
one value check (check_value) and the N-way config diff. config.py declares the settings with
`setting(...)` and builds FIELDS from them; this module holds the machinery.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from gft_core.errors import ConfigError
from gft_core.methods import Method, get_method


@dataclass(frozen=True)
class FieldSpec:
    """What one scalar setting accepts and how the launch form shows it.

    `type`, `default` and `nullable` come from the dataclass field (its annotation `int | None` is
    int, nullable); the rest from `setting(...)` on that field.
    """

    name: str  # GFTConfig attribute ("tau"); data fields dotted ("data.eval_fraction")
    type: type  # int | float | bool | str
    default: Any
    label: str
    help: str
    min: float | None = None  # inclusive unless min_exclusive
    max: float | None = None  # inclusive unless max_exclusive; every numeric field has one
    min_exclusive: bool = False
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    section: str = ""  # launch form section; "" = not on the form
    used_by: Callable[[Method], bool] | None = None  # None = every method
    max_exclusive: bool = False

    def used_by_method(self, method: str) -> bool:
        """Whether `method` reads this setting (the form greys out the others)."""
        spec = get_method(method)  # an unknown method is an error whatever the field
        return self.used_by is None or self.used_by(spec)


def setting(default: Any = dataclasses.MISSING, *, help: str, label: str = "", min: float | None = None,
            max: float | None = None, min_exclusive: bool = False, max_exclusive: bool = False,
            choices: tuple[str, ...] | None = None, section: str = "",
            used_by: Callable[[Method], bool] | None = None) -> Any:
    """A config dataclass field carrying its FieldSpec data (so a new setting is one definition)."""
    spec = dict(label=label, help=help, min=min, max=max, min_exclusive=min_exclusive, max_exclusive=max_exclusive,
                choices=choices, section=section, used_by=used_by)
    return field(default=default, metadata={"spec": spec})


def field_specs(cls: type, prefix: str = "") -> dict[str, FieldSpec]:
    """The FieldSpecs of the fields of `cls` declared with `setting(...)`, in definition order."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        if "spec" not in f.metadata:
            continue
        kind, nullable = hints[f.name], False
        if isinstance(kind, types.UnionType):  # "int | None"
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kind, nullable = args[0], len(args) < len(typing.get_args(kind))
        meta = dict(f.metadata["spec"])
        meta["label"] = meta["label"] or f.name.replace("_", " ").capitalize()
        name = prefix + f.name
        out[name] = FieldSpec(name=name, type=kind, default=f.default, nullable=nullable, **meta)
    return out


def _range_text(spec: FieldSpec) -> str:
    """"(0, 1]", "[1, 8192]"; an open end (no bound) is -inf / inf."""
    lo = "(" if spec.min_exclusive or spec.min is None else "["
    hi = ")" if spec.max_exclusive or spec.max is None else "]"
    return f"{lo}{_number_text(spec.min, '-inf')}, {_number_text(spec.max, 'inf')}{hi}"


def _number_text(x: float | None, unbounded: str) -> str:
    if x is None:
        return unbounded
    return str(int(x)) if float(x).is_integer() else repr(x)


def check_value(spec: FieldSpec, value: Any) -> Any:
    """`value` if it is valid for `spec`; else ConfigError naming the field.

    Checks the type (an int is accepted for a float setting), null-ness, choices and bounds.
    """
    name = spec.name
    if value is None:
        if spec.nullable:
            return value
        raise ConfigError(name, value, "is required")
    if spec.choices is not None:
        if not isinstance(value, str) or value not in spec.choices:
            raise ConfigError(name, value, f"must be one of {', '.join(spec.choices)}")
        return value
    if spec.type is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "must be true or false")
        return value
    if spec.type is dict:  # structured data (eval_suite): its own module checks the inside
        if not isinstance(value, dict):
            raise ConfigError(name, value, "must be a mapping")
        return value
    if spec.type is str:
        if not isinstance(value, str):
            raise ConfigError(name, value, "must be a string")
        return value
    if spec.type is int:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer in"
    else:
        ok, kind = is_number(value), "in"  # "tau: must be in (0, 1]"
    ok = ok and not (spec.min is not None and (value < spec.min or (spec.min_exclusive and value == spec.min)))
    ok = ok and not (spec.max is not None and (value > spec.max or (spec.max_exclusive and value == spec.max)))
    if not ok:
        raise ConfigError(name, value, f"must be {kind} {_range_text(spec)}")
    return value


def config_diff(*configs: dict) -> list[tuple[str, list[Any]]]:
    """[(dotted key, [value in each config])] for the settings that differ; output_dir is ignored.

    Nested mappings (data, reward) are compared key by key; a key missing from a config is None.
    """
    return _diff(configs, "")


def _diff(configs: tuple[dict, ...], prefix: str) -> list[tuple[str, list[Any]]]:
    out: list[tuple[str, list[Any]]] = []
    for key in sorted({k for c in configs for k in c}):
        if not prefix and key == "output_dir":
            continue
        values = [c.get(key) for c in configs]
        if all(isinstance(v, dict) for v in values):
            out += _diff(tuple(values), f"{prefix}{key}.")
        elif any(v != values[0] for v in values[1:]):
            out.append((f"{prefix}{key}", values))
    return out


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
