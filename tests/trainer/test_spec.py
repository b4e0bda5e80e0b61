"""TrainSpec validation: defaults, rejected keys, errors that name the valid choices."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.jobspec import TrainSpec


def test_defaults_are_valid_and_round_trip() -> None:
    spec = TrainSpec()
    assert spec.base == "efficientnet_lite0" and spec.mode == "auto" and spec.scheduler == "cosine"
    assert TrainSpec.model_validate_json(spec.model_dump_json()) == spec


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainSpec.model_validate({"learning_rate": 0.1})
    with pytest.raises(ValidationError, match="patient"):
        TrainSpec.model_validate({"early_stopping": {"patient": 3}})


@pytest.mark.parametrize(("field", "value", "valid"), [
    ("mode", "probe", "'auto', 'linear', 'finetune' or 'gradual'"),
    ("optimizer", "adam", "'sgd' or 'adamw'"),
    ("scheduler", "cyclic", "'cosine', 'onecycle', 'step' or 'plateau'"),
    ("augment", "heavy", "'none', 'light', 'standard' or 'strong'"),
    ("device", "tpu", "'auto', 'cpu' or 'cuda'"),
])
def test_unsupported_choices_name_the_valid_ones(field: str, value: str, valid: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrainSpec.model_validate({field: value})
    assert valid in str(info.value)


def test_base_must_be_catalogue_or_registry_reference() -> None:
    with pytest.raises(ValidationError, match="efficientnet_lite0"):
        TrainSpec(base="vgg16")
    with pytest.raises(ValidationError, match="registry:<model>:<version>"):
        TrainSpec(base="registry:ants")
    assert TrainSpec(base="registry:ants-v2:3").registry_base() == ("ants-v2", 3)
    assert TrainSpec().registry_base() is None


def test_numeric_limits_and_auto_values() -> None:
    assert TrainSpec(lr="auto", num_workers="auto").lr == "auto"
    for bad in ({"lr": 0.0}, {"lr": "fast"}, {"batch_size": 0}, {"num_workers": -1},
                {"label_smoothing": 1.0}, {"early_stopping": {"metric": "f1"}}):
        with pytest.raises(ValidationError):
            TrainSpec.model_validate(bad)
