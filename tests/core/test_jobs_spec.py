"""The API's torch-free job spec must accept exactly what the trainer's spec accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.jobspec import CATALOGUE, JobRequest


def test_the_api_catalogue_names_the_trainers_backbones() -> None:
    from trainer.backbones import available_backbones

    assert list(CATALOGUE) == available_backbones()

@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lr": -1.0}, "lr"),
        ({"batch_size": 0}, "batch_size"),
        ({"mode": "fast"}, "mode"),
        ({"base": "vgg99"}, "unknown base"),
        ({"base": "registry:bees"}, "registry:<model>:<version>"),
        ({"epochs": 3}, "epochs"),  # unknown key: extra="forbid"
    ],
)
def test_bad_hyperparameters_are_named(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        JobRequest(dataset_id="d", model="bees", hyperparameters=fields).spec()


def test_request_fields_override_hyperparameters_and_only_set_fields_are_kept() -> None:
    req = JobRequest(dataset_id="d", model="bees", mode="linear", hyperparameters={"max_epochs": 2})
    assert req.spec().model_dump(mode="json", exclude_unset=True) == {"mode": "linear", "max_epochs": 2}
    with pytest.raises(ValidationError, match="model"):
        JobRequest(dataset_id="d", model="Bad Name")
