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
    """A dataclass field carrying its command-line help (and choices / flag name)."""
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
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            if required and f.metadata.get("required"):
                kwargs["required"] = True
            elif f.default is not None and f.default != "":
                kwargs["help"] += f" (default: {f.default})"
            kwargs["metavar"] = None if kwargs.get("choices") else f.name.upper()
        names = [flag_name(f)]
        if "-" in names[0][2:]:
            names.append("--" + f.name)  # also accept the junyanz spelling, e.g. --netG_norm
        parser.add_argument(*names, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` from the parsed arguments (fields without a flag keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**values)


def config_from_dict(cls: type[T], data: dict[str, Any], *, source: str = "config") -> T:
    """Rebuild ``cls`` from a dict; unknown keys are an error, missing keys take their defaults."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"{source}: unknown option(s) {', '.join(unknown)} (written by a newer version?)")
    return cls(**data)
