"""Option dataclasses <-> command-line flags <-> JSON: the one way every command reads its options.

Each field's ``metadata`` holds its help text (and, where needed, its choices, a custom flag name, or
``nargs``); :func:`add_dataclass_arguments` turns the fields into ``argparse`` flags and
:func:`dataclass_from_args` builds the dataclass back; :func:`parse_field_value` types one ``KEY=VALUE``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from dataclasses import field, fields
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from pix2pix_ilm.errors import UsageError

T = TypeVar("T")


def opt(default: Any, help: str, *, choices: tuple | None = None, flag: str | None = None, **kw: Any) -> Any:
    """A dataclass field carrying its command-line help (and choices, flag name, ``metavar``, ``required``,
    ``append`` for a repeatable flag of a tuple field, ``positional`` for a tuple field given as arguments)."""
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, **kw})


def field_type(tp: Any) -> tuple[type, bool]:
    """(base type, optional) for a field annotation."""
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, *, required: bool = True, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of ``cls``; fields marked ``required`` are required when ``required`` is set."""
    hints = get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        base, optional = field_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", "")}
        if base is bool:
            # An optional bool is automatic until set: --flag / --no-flag.
            kwargs["action"] = argparse.BooleanOptionalAction if optional else "store_true"
            kwargs["default"] = f.default
        else:
            kwargs["type"] = base
            kwargs["default"] = f.default
            if get_origin(base) is tuple:  # tuple[X, ...]: --seeds 0 1 2, or with append: --set a=1 --set b=2
                kwargs.update(type=get_args(base)[0], default=list(f.default))
                kwargs.update({"action": "append"} if f.metadata.get("append") else {"nargs": "+"})
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if required and f.metadata.get("required"):
                kwargs["required"] = True
            elif f.default not in (None, "", ()):
                shown = " ".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
                kwargs["help"] += f" (default: {shown})"
            kwargs["metavar"] = f.metadata.get("metavar") or (
                None if kwargs.get("choices") else f.name.upper()
            )
        if f.metadata.get("positional"):  # tuple[str, ...] as the command's arguments
            kwargs.pop("dest"), kwargs.pop("required", None)
            parser.add_argument(f.name, **kwargs)
            continue
        names = [flag_name(f)]
        if "-" in names[0][2:]:
            names.append("--" + f.name)  # also accept the junyanz spelling, e.g. --netG_norm
        parser.add_argument(*names, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from the parsed arguments (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def parse_field_value(cls: type, name: str, text: str) -> Any:
    """``text`` typed as field ``name`` of ``cls``, as its flag takes it; ``none`` (and ``auto`` for an
    optional bool) gives None where the field allows it. :class:`UsageError` names the field."""
    base, optional = field_type(get_type_hints(cls)[name])
    choices = next(f for f in fields(cls) if f.name == name).metadata.get("choices")
    if optional and text.lower() in ("", "none", *(("auto",) if base is bool else ())):
        return None
    if base is bool:
        if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise UsageError(f"{name}: expected true or false, got {text!r}")
        return text.lower() in ("1", "true", "yes")
    try:
        value = base(text)
    except ValueError as err:
        raise UsageError(f"{name}: {err}") from err
    if choices and value not in choices:
        raise UsageError(f"{name}: expected one of {', '.join(map(str, choices))}, got {text!r}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Rebuild ``cls`` from a dict; unknown keys are an error, missing keys take ``cls.UNSAVED``'s value (what
    a config written before the option existed meant) or their defaults."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)} (written by a newer version?)")
    hints = get_type_hints(cls)
    for name, value in data.items():
        if problem := _value_problem(cls, name, hints[name], value):
            raise UsageError(
                f"{source}: {name} is {value!r}, {problem} (edited by hand? restore it from a backup)"
            )
    return cls(**{**getattr(cls, "UNSAVED", {}), **data})


def _value_problem(cls: type, name: str, hint: Any, value: Any) -> str | None:
    """Why ``value`` cannot be field ``name`` of ``cls`` (its type, its choices), or None."""
    base, optional = field_type(hint)
    expected = {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(base)
    if expected is None or (value is None and optional):
        return None  # a type JSON does not hold (a tuple as a list, ...): the class itself checks it
    kinds = (int, float) if base is float else (base,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and base is not bool):
        return f"but it must be {expected}"
    choices = next(f for f in fields(cls) if f.name == name).metadata.get("choices")
    return f"not one of {', '.join(map(str, choices))}" if choices and value not in choices else None
