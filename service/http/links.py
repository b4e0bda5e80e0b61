"""OpenAPI links: which routes take the id a created resource answers with.

A client (and schemathesis's stateful phase) follows them from ``POST /v1/datasets`` to the routes that
take the dataset's id, and from ``POST /v1/jobs`` to the job's own routes. Links name their target by
``operationId``; FastAPI derives those from the route, so they are looked up in the finished document
by path and method rather than spelled here.
"""

from __future__ import annotations

from typing import Any

# (path, method) -> statuses that answer a created resource
Source = tuple[str, str, tuple[str, ...]]
# link name -> (target path, target method, the link object without operationId)
Targets = dict[str, tuple[str, str, dict[str, Any]]]

DATASET_ID = "$response.body#/id"
JOB_ID = "$response.body#/id"

LINKS: list[tuple[Source, Targets]] = [
    (("/v1/datasets", "post", ("201", "200")), {
        "GetDataset": ("/v1/datasets/{dataset_id}", "get", {
            "parameters": {"dataset_id": DATASET_ID}, "description": "the dataset's full report"}),
        "DeleteDataset": ("/v1/datasets/{dataset_id}", "delete", {
            "parameters": {"dataset_id": DATASET_ID}, "description": "delete the dataset"}),
        "StartJob": ("/v1/jobs", "post", {
            "requestBody": {"dataset_id": DATASET_ID},
            "description": "fine-tune a model on the dataset: its id is the job's dataset_id"}),
    }),
    (("/v1/jobs", "post", ("202",)), {
        "GetJob": ("/v1/jobs/{job_id}", "get", {
            "parameters": {"job_id": JOB_ID}, "description": "the job's state, progress and metrics"}),
        "CancelJob": ("/v1/jobs/{job_id}/cancel", "post", {
            "parameters": {"job_id": JOB_ID}, "description": "cancel the job"}),
        "JobEvents": ("/v1/jobs/{job_id}/events", "get", {
            "parameters": {"job_id": JOB_ID}, "description": "the job's progress as server-sent events"}),
        "JobReport": ("/v1/jobs/{job_id}/report", "get", {
            "parameters": {"job_id": JOB_ID}, "description": "the evaluation report, once the job has succeeded"}),
    }),
]


def add_links(doc: dict[str, Any]) -> None:
    """Put ``LINKS`` into ``doc``'s responses (KeyError naming the path when a route is gone)."""
    paths = doc["paths"]
    for (path, method, statuses), targets in LINKS:
        responses = paths[path][method]["responses"]
        links = {name: {"operationId": paths[target][target_method]["operationId"], **link}
                 for name, (target, target_method, link) in targets.items()}
        for status in statuses:
            responses[status].setdefault("links", {}).update(links)
