"""Torch-free schema of a hyper-parameter search, so the API rejects a bad one before queueing.

A job carries ``"search": {"method": "grid"|"random"|"asha", "trials": N, "space": {...},
"max_epochs": E, "reduction_factor": 3, "min_epochs": 1, "seed": S}``. Each entry of ``space``
names a searchable hyper-parameter and its distribution, in any of these spellings::

    "lr": "loguniform(1e-4, 1e-2)"          # also uniform(a, b), int(a, b), choice(a, b, ...)
    "lr": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}
    "lr": {"low": 1e-4, "high": 1e-2}       # the key's default distribution (loguniform for lr)
    "augment": ["light", "standard"]         # a list is a choice
    "optimizer": "adamw"                     # a single value is fixed
    "lr": "auto"                             # loguniform over [auto/10, auto*10], auto = LR range test

Bounds and choices are checked against the job spec (``core.jobspec.TrainSpec``), so a searched
value is always one a single job would accept. The worker turns a space into Optuna suggestions
(``trainer/search/optuna_study.py``); this module only validates and describes.
"""

from __future__ import annotations

import ast
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from core.validation import error_lines, error_message, field_range, finite_number

METHODS = ("grid", "random", "asha")
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
# Searchable keys and the distribution a bare {"low", "high"} range gets.
SEARCHABLE: dict[str, str] = {
    "lr": "loguniform",
    "weight_decay": "loguniform",
    "backbone_lr_scale": "loguniform",
    "label_smoothing": "uniform",
    "warmup_epochs": "uniform",
    "batch_size": "int",
    "mode": "choice",
    "optimizer": "choice",
    "augment": "choice",
    "scheduler": "choice",
    "ema": "choice",
    "base": "choice",
}
AUTO_SPAN = 10.0  # "auto" searches lr in [auto / AUTO_SPAN, auto * AUTO_SPAN]
TRIAL_STATES = ("queued", "running", "pruned", "complete", "failed")

Scalar = float | int | str | bool
_CALL = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.S)


class Param(BaseModel):
    """One searched hyper-parameter (normalised form)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    distribution: Literal["loguniform", "uniform", "int", "choice"]
    low: float | None = Field(default=None, description="lowest value of a range; at most high (and above 0 for "
                                                         "loguniform), within the hyper-parameter's own range")
    high: float | None = Field(default=None, description="highest value of a range; at least low")
    step: int | None = Field(default=None, ge=1, le=4096)  # int only; 4096 = the largest batch_size
    values: list[Scalar] | None = None  # choice only
    auto: bool = False  # lr only: bounds come from the LR range test at search time
    grid_points: int | None = Field(default=None, ge=1, le=100)  # grid: points of a range

    @field_validator("values", mode="before")
    @classmethod
    def _scalar_values(cls, values: Any) -> Any:
        """One message for a bad choice (not one per type of ``Scalar``)."""
        if not isinstance(values, list):
            return values
        for value in values:
            if isinstance(value, str | bool) or (isinstance(value, int | float) and finite_number(value) is not None):
                continue
            raise ValueError(f"choice values must be finite numbers, strings or booleans, not {value!r}")
        return values

    @model_validator(mode="after")
    def _shape(self) -> Param:
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("choice needs a non-empty list of values")
            return self
        if self.auto:
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.distribution} needs low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        if self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.distribution == "int" and (self.low != int(self.low) or self.high != int(self.high)):
            raise ValueError("int needs whole-number bounds")
        return self


class SpaceSchema:
    """The OpenAPI document of ``space``: searchable keys, each a ``Param`` or one of its short spellings."""

    def __get_pydantic_json_schema__(self, _schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        scalars: list[dict[str, Any]] = [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]
        return {
            "type": "object",
            "propertyNames": {"enum": list(SEARCHABLE)},
            "additionalProperties": {"anyOf": [
                handler(Param.__pydantic_core_schema__),
                {"type": "array", "minItems": 1, "items": {"anyOf": scalars}, "description": "a choice"},
                {"type": "string", "description": "'loguniform(a, b)', 'uniform(a, b)', 'int(a, b)', "
                                                  "'choice(a, b, ...)', 'auto' (lr only) or a fixed value"},
                {"type": "number", "description": "a fixed value"},
                {"type": "boolean", "description": "a fixed value"},
            ]},
            "description": "hyper-parameter -> distribution; bounds and choices must be valid for that "
                           "hyper-parameter (low <= high); empty or absent: a default space around the LR test",
        }


class SearchSpec(BaseModel):
    """The ``search`` object of a job."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    method: Literal["grid", "random", "asha"]
    trials: int = Field(default=9, ge=1, le=1000)
    space: Annotated[dict[str, Param], SpaceSchema()] = Field(default_factory=dict)
    # The epoch relation is checked by ``_epochs`` (422); JSON Schema cannot compare two fields, so the
    # descriptions say it (and tests/service/schemathesis.toml lists it among the rules it cannot express).
    max_epochs: int = Field(default=3, ge=1, le=1000, description="epochs of the longest trial; at least min_epochs")
    reduction_factor: int = Field(default=3, ge=2, le=100)
    min_epochs: int = Field(default=1, ge=1, le=1000,
                            description="epochs before ASHA may first stop a trial; at most max_epochs")
    # ASHA: how many trials must reach a rung before any is promoted past it. Optuna cannot pause a
    # trial to promote it later, so with 0 the first trials to reach a rung continue whenever they
    # lead it (few competitors yet); with N the first N are stopped there instead. None: see
    # ``effective_bootstrap_count``.
    bootstrap_count: int | None = Field(default=None, ge=0, le=1000)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, raw: Any) -> dict[str, Param]:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("space must be an object mapping hyper-parameter names to distributions")
        return {key: parse_param(key, value) for key, value in raw.items()}

    @model_validator(mode="after")
    def _epochs(self) -> SearchSpec:
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs ({self.min_epochs}) must not exceed max_epochs ({self.max_epochs})")
        return self

    def effective_bootstrap_count(self) -> int:
        """``bootstrap_count``, or by default ``reduction_factor - 1`` once the search is big enough
        to spare them (at least ``reduction_factor**2`` trials per stopped one), else 0.

        Measured (docs/benchmarks.md, "## Hyper-parameter search"): 27 trials on hymenoptera ran 69
        epochs with 0 and 61 with 2, both ending on the same best trial; eager promotion of the
        first trials to reach each rung is what the 8 extra epochs went to.
        """
        if self.bootstrap_count is not None:
            return self.bootstrap_count
        return min(self.reduction_factor - 1, self.trials // self.reduction_factor**2)

    def effective_space(self) -> dict[str, Param]:
        """The space to search: the given one, or the default when none was given."""
        return dict(self.space) if self.space else default_space()


def default_space() -> dict[str, Param]:
    """Learning rate around the LR range test's pick, weight decay, and light vs standard augmentation."""
    return {
        "lr": Param(distribution="loguniform", auto=True),
        "weight_decay": Param(distribution="loguniform", low=1e-5, high=1e-2),
        "augment": Param(distribution="choice", values=["light", "standard"]),
    }


def parse_param(key: str, value: Any) -> Param:
    """One space entry in any accepted spelling -> Param; ValueError names what is valid."""
    if key not in SEARCHABLE:
        raise ValueError(f"{key!r} is not searchable; searchable keys: {', '.join(SEARCHABLE)}")
    param = _to_param(key, value)
    if param.auto and key != "lr":
        raise ValueError(f"'auto' is only valid for lr, not {key!r}")
    _check_values(key, param)
    return param


def _to_param(key: str, value: Any) -> Param:
    if isinstance(value, Param):
        return value
    if isinstance(value, list):
        return _validated(key, {"distribution": "choice", "values": value})
    if isinstance(value, dict):
        fields = dict(value)
        if "distribution" in fields:
            _known_distribution(fields["distribution"], key)
        elif "values" in fields:
            fields["distribution"] = "choice"
        else:
            fields["distribution"] = SEARCHABLE[key]
        return _validated(key, fields)
    if isinstance(value, str):
        if value == "auto":
            if key != "lr":
                raise ValueError(f"'auto' is only valid for lr, not {key!r}")
            return Param(distribution="loguniform", auto=True)
        match = _CALL.match(value)
        if match:
            return _from_call(key, match.group(1), match.group(2))
    if isinstance(value, str | int | float | bool):
        return _validated(key, {"distribution": "choice", "values": [value]})
    raise ValueError(f"{key}: expected a distribution like 'loguniform(1e-4, 1e-2)', a list or a value")


def _known_distribution(name: Any, key: str) -> None:
    if name not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {name!r} for {key}; use one of {', '.join(DISTRIBUTIONS)}")


def _validated(key: str, fields: dict[str, Any]) -> Param:
    from core.jobspec import TrainSpec

    try:
        return Param.model_validate(fields)
    except ValidationError as exc:
        msgs = "; ".join(error_lines(exc, Param))
        about_values = any(e["loc"] and e["loc"][0] in ("low", "high", "values") for e in exc.errors())
        valid = field_range(TrainSpec, (key,)) if about_values else None
        raise ValueError(f"{key}: {msgs}" + (f" ({key} takes {valid})" if valid else "")) from None


def _from_call(key: str, name: str, args_text: str) -> Param:
    _known_distribution(name, key)
    try:
        args: tuple[Any, ...] = ast.literal_eval(f"({args_text},)") if args_text.strip() else ()
    except (ValueError, SyntaxError):
        if name != "choice":
            raise ValueError(f"{key}: cannot read the arguments of {name}({args_text}): write numbers, "
                             f"e.g. {name}({'8, 64' if name == 'int' else '0.001, 0.1'})") from None
        args = tuple(a.strip().strip("'\"") for a in args_text.split(",") if a.strip())  # choice(a, b)
    if name == "choice":
        values = list(args[0]) if len(args) == 1 and isinstance(args[0], list | tuple) else list(args)
        return _validated(key, {"distribution": "choice", "values": values})
    if len(args) not in (2, 3):
        raise ValueError(f"{key}: {name} takes (low, high{', step' if name == 'int' else ''})")
    fields: dict[str, Any] = {"distribution": name, "low": args[0], "high": args[1]}
    if len(args) == 3:
        fields["step"] = args[2]
    return _validated(key, fields)


def _check_values(key: str, param: Param) -> None:
    """Every value the search may try must be one a single job accepts (same bounds, same choices)."""
    from core.jobspec import TrainSpec

    candidates: list[Any] = []
    if param.distribution == "choice":
        candidates = list(param.values or [])
    elif not param.auto:
        kind = SEARCHABLE[key]
        if kind == "choice":
            raise ValueError(f"{key} takes choice([...]), not {param.distribution}")
        if param.distribution == "int" and kind != "int":
            raise ValueError(f"{key} is a real number: use loguniform or uniform, not int")
        if kind == "int" and param.distribution != "int":
            raise ValueError(f"{key} is a whole number: use int(low, high) or choice([...])")
        candidates = [param.low, param.high]
        if kind == "int":
            candidates = [int(c) for c in candidates if c is not None]
    # A registry base is checked for its form here; whether the version exists is the worker's
    # check (a missing version fails that trial, not the search).
    for value in candidates:
        try:
            TrainSpec.model_validate({key: value})
        except ValidationError as exc:
            raise ValueError(f"{key}={value!r} is not a valid value: {error_message(exc, TrainSpec)}") from None


def validation_message(exc: ValidationError) -> str:
    """A pydantic error on a SearchSpec as one line naming each bad field (for the API's 422)."""
    return error_message(exc, SearchSpec, prefix="search")


# ---------------------------------------------------------------- job view (what the API shows)
def trial_summaries(job_progress: dict[str, Any] | None, job_result: dict[str, Any] | None) -> dict[str, Any]:
    """``trials`` and ``best_trial`` of a search job, from its result (finished) or progress (running)."""
    source = job_result if job_result and "trials" in job_result else (job_progress or {})
    trials = list(source.get("trials") or [])
    return {"trials": trials, "best_trial": source.get("best_trial") or best_of(trials)}


def best_of(trials: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The complete trial whose final model scored highest (``value``; lowest number on ties)."""
    done = [t for t in trials if t.get("state") == "complete"
            and (t.get("value") is not None or t.get("best_val_accuracy") is not None)]
    if not done:
        return None

    def key(t: dict[str, Any]) -> tuple[float, int]:
        value = t.get("value")
        return (float(value if value is not None else t["best_val_accuracy"]), -int(t.get("number", 0)))

    return max(done, key=key)
