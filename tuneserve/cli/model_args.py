"""argparse options generated from a pydantic model's fields, so a CLI never copies them by hand.

Every field of the model becomes ``--field-name`` (a nested model's fields ``--outer-inner``), with
the field's description as help and its default shown; ``Literal`` fields get their choices, bools
a ``--x/--no-x`` pair. Values are handed to pydantic as given, so the CLI accepts and refuses
exactly what the API does. A flag that is not given is not set: the model's default (or a
``--spec`` file's value) applies.
"""

from __future__ import annotations

import argparse
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

SEP = "__"  # joins a nested field's path in argparse's dest (field names never contain it)


def add_model_options(parser: argparse.ArgumentParser, model: type[BaseModel], prefix: str = "") -> None:
    """Add one option per field of ``model`` (recursing into nested models) to ``parser``."""
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None:
            add_model_options(parser, nested, f"{prefix}{name}{SEP}")
            continue
        flag = "--" + f"{prefix}{name}".replace(SEP, "-").replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f"{prefix}{name}", "default": None, "help": _help(info)}
        if info.annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs.update(_value_kwargs(info.annotation))
            if "choices" not in kwargs:
                kwargs.setdefault("metavar", name.upper())
        parser.add_argument(flag, **kwargs)


def model_values(opts: argparse.Namespace, model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """The fields of ``model`` that were given on the command line, nested like the model."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        nested = _nested_model(info.annotation)
        if nested is not None:
            inner = model_values(opts, nested, f"{prefix}{name}{SEP}")
            if inner:
                values[name] = inner
            continue
        value = getattr(opts, f"{prefix}{name}", None)
        if value is not None:
            values[name] = value
    return values


def merge(base: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a spec file) with ``flags`` on top, nested models merged key by key."""
    out = dict(base)
    for key, value in flags.items():
        out[key] = merge(dict(out.get(key) or {}), value) if isinstance(value, dict) else value
    return out


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _value_kwargs(annotation: Any) -> dict[str, Any]:
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation))}
    if annotation in (int, float):
        return {"type": annotation}
    # Unions ("a number or 'auto'", "a number or unset") and strings: pydantic parses the text.
    return {"metavar": "VALUE"}


def _help(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    text = info.description or ""
    return f"{text} (default: {default})" if text else f"default: {default}"
