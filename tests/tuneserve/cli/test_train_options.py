"""The train CLI's options are generated from TrainSpec (tuneserve/cli/model_args.py): none is copied by hand."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from core.jobspec import EarlyStopping, TrainSpec
from tuneserve.cli.model_args import add_model_options, model_values
from tuneserve.cli.train import parser, spec_from_args


def _flags(p: argparse.ArgumentParser) -> set[str]:
    return {flag for action in p._actions for flag in action.option_strings}


def test_every_trainspec_field_is_an_option() -> None:
    flags = _flags(parser())
    for name in TrainSpec.model_fields:
        if name == "early_stopping":
            continue
        assert "--" + name.replace("_", "-") in flags, name
    for name in EarlyStopping.model_fields:
        assert "--early-stopping-" + name.replace("_", "-") in flags, name


def test_a_new_field_appears_without_a_second_edit() -> None:
    class Grown(TrainSpec):
        mixup_alpha: float = Field(default=0.0, ge=0.0, description="strength of mixup")
        sampler: Literal["uniform", "balanced"] = "uniform"

    p = argparse.ArgumentParser()
    add_model_options(p, Grown)
    assert {"--mixup-alpha", "--sampler", "--ema", "--no-ema"} <= _flags(p)
    opts = p.parse_args(["--mixup-alpha", "0.4", "--sampler", "balanced", "--no-ema"])
    assert Grown.model_validate(model_values(opts, Grown)).model_dump(include={"mixup_alpha", "sampler", "ema"}) == {
        "mixup_alpha": 0.4, "sampler": "balanced", "ema": False}
    help_text = p.format_help()
    assert "strength of mixup (default: 0.0)" in help_text
    with pytest.raises(SystemExit):  # a Literal's choices are checked by argparse
        p.parse_args(["--sampler", "random"])


def test_flags_override_the_spec_file_and_unset_flags_keep_it(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"optimizer": "sgd", "early_stopping": {"metric": "val_loss", "patience": 9}}')
    opts = parser().parse_args(["data", "--model", "m", "--spec", str(spec_file), "--lr", "auto",
                                "--early-stopping-patience", "3", "--time-budget-s", "120", "--num-workers", "2"])
    spec = spec_from_args(opts)
    assert spec.optimizer == "sgd" and spec.lr == "auto" and spec.time_budget_s == 120.0 and spec.num_workers == 2
    assert spec.early_stopping.model_dump() == {"metric": "val_loss", "patience": 3, "min_delta": 0.0}
    assert spec.model_dump(exclude_unset=True).keys() == {"optimizer", "lr", "time_budget_s", "num_workers",
                                                          "early_stopping"}


class _Inner(BaseModel):
    depth: int = 1


def test_nested_models_nest_and_absent_flags_are_not_set() -> None:
    class Outer(BaseModel):
        inner: _Inner = Field(default_factory=_Inner)
        name: str = "x"

    p = argparse.ArgumentParser()
    add_model_options(p, Outer)
    assert model_values(p.parse_args([]), Outer) == {}
    assert model_values(p.parse_args(["--inner-depth", "4"]), Outer) == {"inner": {"depth": 4}}
