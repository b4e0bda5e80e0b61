"""A model keeps its meaning: what a job may do to a model name that already serves labels.

A model name is a contract with its callers: ``imagenet`` answers ImageNet classes, a model trained
on hat/pants/shoes answers those. A job that would publish another label set under a name that
serves one is refused before it is queued (and again before it publishes, in case the active
version changed meanwhile), unless the job says ``"replace_labels": true``. The bootstrapped
pretrained model is never replaced by a job (activate or roll back its versions by hand). The same
labels in another order are no conflict: the trainer maps its outputs to the served order.
"""

from __future__ import annotations

from models.registry import Registry

PRETRAINED_MODEL = "imagenet"  # registered by trainer/publish/bootstrap.py; jobs may not publish under it


class LabelConflict(Exception):
    """The job's labels do not fit the target model; the message names the fix (in the API's words).

    ``problem``, ``name`` and ``replaceable`` (whether ``replace_labels`` would do) let another
    entry, such as ``tuneserve train``, say the fix in its own words.
    """

    def __init__(self, message: str, problem: str, name: str, replaceable: bool) -> None:
        super().__init__(message)
        self.problem, self.name, self.replaceable = problem, name, replaceable


def served_labels(registry: Registry, name: str) -> list[str] | None:
    """The labels of ``name``'s active version (None: no such model, or nothing active)."""
    if not registry.exists(name):
        return None
    active = registry.active_version(name)
    return None if active is None else list(registry.get(name, active).manifest.labels)


def is_pretrained(registry: Registry, name: str) -> bool:
    if name == PRETRAINED_MODEL:
        return True
    if not registry.exists(name):
        return False
    active = registry.active_version(name)
    return active is not None and registry.get(name, active).manifest.source.get("kind") == "pretrained"


def check_labels(registry: Registry, name: str, labels: list[str], replace_labels: bool = False,
                 pretrained: bool = False) -> list[str] | None:
    """The label order the job must publish in (the served one), or None when it is free to choose.

    Raises LabelConflict when the job would change what ``name`` means. ``pretrained``: the
    candidate is the bootstrapped model itself (a new version of it keeps its labels).
    """
    if not pretrained and is_pretrained(registry, name):
        problem = f"model {name!r} is the pretrained model this service bootstrapped; a job cannot replace it"
        raise LabelConflict(
            f"{problem}. Train under a new model name (e.g. \"model\": \"{name}-custom\"); {name!r} itself can "
            f"still be activated or rolled back by hand (POST /v1/models/{name}/versions/<n>/activate)",
            problem, name, replaceable=False)
    served = served_labels(registry, name)
    if served is None:
        return None
    if sorted(served) == sorted(labels):
        return served
    if replace_labels:
        return None
    missing, extra = sorted(set(served) - set(labels)), sorted(set(labels) - set(served))
    problem = (f"model {name!r} serves {len(served)} labels and this dataset has {len(labels)} "
               f"(not in the dataset: {_some(missing)}; new: {_some(extra)}); publishing would change what "
               f"{name!r} answers")
    raise LabelConflict(f"{problem}. Use a new model name, or pass \"replace_labels\": true to replace its labels",
                        problem, name, replaceable=True)


def _some(names: list[str], limit: int = 5) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
