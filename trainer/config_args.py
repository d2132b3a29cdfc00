"""Command-line flags made from a job's config dataclass: one `--flag` per field, its help the field's docstring.

Job settings live in dataclasses with a docstring under each field (the litgpt style); the CLI reads those
docstrings from the source, so a flag's help never drifts from the field it sets. A flag that is not given leaves
the field to its default, which is the job's recommended recipe; `--recipe FILE` (a TOML table of field values)
sets several at once, and flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass (and of its dataclass bases)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for node, following in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)):
                docs[node.target.id] = " ".join(following.value.value.split())
    return docs


METAVARS = {int: "N", float: "X", str: "S", Path: "PATH"}


class Help(argparse.RawDescriptionHelpFormatter):
    """A wide help layout: one line per flag where the text allows."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=120)


def first_sentence(doc: str) -> str:
    """The docstring up to its first full stop (the flag's one-line help; the dataclass holds the rest)."""
    head, dot, _ = doc.partition(". ")
    return head + ("." if dot else "")


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """(converter, is a comma-separated list) of a field's type; None for a type no flag can set."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(h for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is tuple:
        return typing.get_args(hint)[0], True
    return (hint, False) if hint in (int, float, str, Path, bool) else (None, False)


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of `cls` not in `skip`, help = the field's docstring and its default."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind, is_list = _flag_type(hints[field.name])
        if field.name in skip or kind is None:
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = ",".join(map(str, default)) if is_list and default is not None else default
        help_text = f"{first_sentence(docs.get(field.name, ''))} ({shown})".replace("%", "%%")
        flag = "--" + field.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            parser.add_argument(flag, type=str if is_list else kind, default=None, help=help_text,
                                metavar="A,B" if is_list else METAVARS[kind])


def load_recipe(path: Path, cls: type) -> dict[str, Any]:
    """The field values of a TOML recipe file; an error naming any key that is not a field of `cls`."""
    with open(path, "rb") as handle:
        values = tomllib.load(handle)
    names = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{path}: unknown setting {', '.join(map(repr, unknown))} (the settings are the fields of "
                         f"{cls.__name__})")
    return values


def config_from_args(cls: type[C], args: argparse.Namespace, recipe: Path | None = None, **fixed: Any) -> C:
    """`cls` from the recipe file (if any), then the flags that were given, then `fixed`."""
    values = load_recipe(recipe, cls) if recipe is not None else {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        given = getattr(args, field.name, None)
        if given is not None:
            kind, is_list = _flag_type(hints[field.name])
            values[field.name] = tuple(kind(v.strip()) for v in given.split(",") if v.strip()) if is_list else given
    return cls(**{**values, **fixed})
