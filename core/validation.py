"""Pydantic errors as one line for a 422: each bad field named, with the range it accepts.

``1 <= batch_size <= 4096`` comes from the field's own ``ge``/``gt``/``le``/``lt`` constraints, so the
message and the check cannot drift apart. Fields checked by a hand-written validator (a number *or*
a word, such as ``lr: 1e-3 | "auto"``) declare their range in the model's ``valid_ranges``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema


@dataclass(frozen=True)
class DocumentedAs:
    """Annotation: validate a field as its own type (a dict the route checks for its better 422) but
    document it in JSON Schema / OpenAPI as ``model()``'s fields, ranges and enums."""

    model: Callable[[], type[BaseModel]]
    nullable: bool = False

    def __get_pydantic_json_schema__(self, _schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        documented = handler(self.model().__pydantic_core_schema__)
        return {"anyOf": [documented, {"type": "null"}]} if self.nullable else documented


def field_range(model: type[BaseModel], loc: Sequence[str | int]) -> str | None:
    """``'1 <= batch_size <= 4096'`` for the numeric field at ``loc`` (nested models followed), else None."""
    cls: type[BaseModel] | None = model
    name = ""
    field = None
    for part in loc:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            break
        name, field = part, cls.model_fields[part]
        custom = getattr(cls, "valid_ranges", {}).get(part)
        if custom:
            return str(custom)
        ann = field.annotation
        cls = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if field is None:
        return None
    low = high = ""
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge | annotated_types.Gt):
            low = f"{_bound(meta)} {'<=' if isinstance(meta, annotated_types.Ge) else '<'} "
        elif isinstance(meta, annotated_types.Le | annotated_types.Lt):
            high = f" {'<=' if isinstance(meta, annotated_types.Le) else '<'} {_bound(meta)}"
    return f"{low}{name}{high}" if low or high else None


def _bound(meta: Any) -> str:
    value = next(getattr(meta, a) for a in ("ge", "gt", "le", "lt") if hasattr(meta, a))
    return f"{value:g}" if isinstance(value, float) else str(value)


def error_lines(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """``prefix.field: message (valid: range)`` for every error of ``exc`` (raised by ``model``)."""
    lines = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        msg = str(err.get("msg")).removeprefix("Value error, ")
        valid = field_range(model, loc)
        if valid and valid not in msg:
            msg = f"{msg} (valid: {valid})"
        label = ".".join(p for p in (prefix, where) if p)
        lines.append(f"{label}: {msg}" if label else msg)
    return lines


def error_message(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    return "; ".join(error_lines(exc, model, prefix))


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (bools are not numbers here), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int too large for a float
        return None
    return number if math.isfinite(number) else None
