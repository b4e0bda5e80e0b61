"""The OpenAPI document says what the routes do, and /docs works offline (packaged Swagger UI files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from core.job_states import STATES
from core.settings import Settings
from service.http.app import create_app
from service.http.links import LINKS
from service.http.routes.datasets import FORM_FIELDS
from service.inference.predictor import MAX_EXPLAIN_IMAGES

ERROR_REF = "#/components/schemas/ErrorDetail"
V2_ERROR_REF = "#/components/schemas/V2Error"


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()]


def test_every_error_answer_is_documented_as_detail_string(settings: Settings) -> None:
    doc = create_app(settings).openapi()
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["ErrorDetail"]["properties"]["detail"]["type"] == "string"
    for path, method, op in operations(doc):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                # The Open Inference Protocol writes its errors as {"error": string} (service/http/routes/v2.py).
                ref = V2_ERROR_REF if path.startswith("/v2") else ERROR_REF
                assert schema == {"$ref": ref}, (method, path, status)
    codes = {(path, method): set(op["responses"]) for path, method, op in operations(doc)}
    assert {"400", "404", "413", "415", "422", "503"} <= codes[("/v1/models/{name}/predict", "post")]
    assert {"400", "413", "415", "422"} <= codes[("/v1/datasets", "post")]
    assert {"404", "409"} <= codes[("/v1/datasets/{dataset_id}", "delete")]
    assert {"400", "404", "415", "422", "503"} <= codes[("/v1/jobs", "post")]
    assert {"400", "404", "413", "503"} <= codes[("/v2/models/{name}/infer", "post")]


def test_request_bodies_of_predict_and_upload(settings: Settings) -> None:
    doc = create_app(settings).openapi()
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert predict["multipart/form-data"]["schema"]["properties"]["file"]["items"]["format"] == "binary"
    assert predict["image/*"]["schema"]["format"] == "binary"
    upload = doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert upload["required"] == ["file"] and upload["properties"]["file"]["format"] == "binary"


def test_hyperparameters_and_search_are_typed(settings: Settings) -> None:
    schemas = create_app(settings).openapi()["components"]["schemas"]
    job = schemas["JobRequest"]
    hyper = job["properties"]["hyperparameters"]
    assert hyper["additionalProperties"] is False
    assert hyper["properties"]["batch_size"] == {"type": "integer", "minimum": 1, "maximum": 4096,
                                                 "title": "Batch Size", "default": 32}
    assert hyper["properties"]["optimizer"]["enum"] == ["sgd", "adamw"]
    assert {"type": "string", "const": "auto"} in hyper["properties"]["lr"]["anyOf"]
    search = next(s for s in job["properties"]["search"]["anyOf"] if s.get("type") != "null")
    assert search["properties"]["method"]["enum"] == ["grid", "random", "asha"]
    assert "lr" in search["properties"]["space"]["propertyNames"]["enum"]
    assert job["examples"][0]["hyperparameters"]["lr"] == "auto"


def test_docs_page_uses_packaged_swagger_ui(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        assert "cdn" not in page.text.lower() and "https://" not in page.text.split("<body>")[1]
        assert "/docs-static/swagger-ui-bundle.js" in page.text
        bundle = client.get("/docs-static/swagger-ui-bundle.js")
        assert bundle.status_code == 200 and len(bundle.content) > 500_000 and b"SwaggerUIBundle" in bundle.content
        assert client.get("/docs-static/swagger-ui.css").status_code == 200


def test_wrong_method_names_every_allowed_one(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        resp = client.request("OPTIONS", "/v1/datasets")
        assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD, POST"
        assert resp.json() == {"detail": "Method Not Allowed"}
        assert client.put("/v1/datasets/abc").headers["allow"] == "DELETE, GET, HEAD"
        for method in ("DELETE", "OPTIONS"):  # /v1/jobs/schema is its own route, not a job named 'schema'
            resp = client.request(method, "/v1/jobs/schema")
            assert resp.status_code == 405 and resp.headers["allow"] == "GET, HEAD", method


def test_links_lead_from_created_resources_to_the_routes_that_take_their_ids(settings: Settings) -> None:
    doc = create_app(settings).openapi()
    by_id = {op["operationId"]: (path, method, op) for path, method, op in operations(doc)}
    followed: set[tuple[str, str, str]] = set()
    for (path, method, statuses), _targets in LINKS:
        for status in statuses:
            for name, link in doc["paths"][path][method]["responses"][status]["links"].items():
                target_path, target_method, target = by_id[link["operationId"]]
                taken = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
                assert set(link.get("parameters", {})) == taken, (name, target_path)  # every id it needs
                if "requestBody" in link:
                    body = target["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
                    fields = doc["components"]["schemas"][body]["properties"]
                    assert set(link["requestBody"]) <= set(fields), (name, body)
                assert all(v == "$response.body#/id" for v in (*link.get("parameters", {}).values(),
                                                                 *link.get("requestBody", {}).values()))
                followed.add((status, target_method, target_path))
    assert {("201", "get", "/v1/datasets/{dataset_id}"), ("201", "delete", "/v1/datasets/{dataset_id}"),
            ("201", "post", "/v1/jobs"), ("200", "post", "/v1/jobs"), ("202", "get", "/v1/jobs/{job_id}"),
            ("202", "post", "/v1/jobs/{job_id}/cancel"), ("202", "get", "/v1/jobs/{job_id}/events"),
            ("202", "get", "/v1/jobs/{job_id}/report")} <= followed
    created = doc["paths"]["/v1/jobs"]["post"]["responses"]["202"]["content"]["application/json"]["schema"]
    assert doc["components"]["schemas"][created["$ref"].split("/")[-1]]["required"] == ["id", "state"]


def test_state_filter_is_an_enum_and_empty_means_every_state(settings: Settings) -> None:
    app = create_app(settings)
    (param,) = [p for p in app.openapi()["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "state"]
    assert param["schema"]["enum"] == [*STATES, ""]
    with TestClient(app) as client:
        store = app.state.job_store
        queued = store.create("bees", "d1", {}).id
        cancelled = store.cancel(store.create("bees", "d1", {}).id).id
        assert {j["id"] for j in client.get("/v1/jobs?state=").json()} == {queued, cancelled}
        assert [j["id"] for j in client.get("/v1/jobs", params={"state": "queued"}).json()] == [queued]
        assert [j["id"] for j in client.get("/v1/jobs", params={"state": "cancelled"}).json()] == [cancelled]
        bad = client.get("/v1/jobs", params={"state": "done"})
        assert bad.status_code == 422 and "queued, running, succeeded, failed, cancelled" in bad.json()["detail"]


def test_upload_takes_only_its_documented_form_fields(settings: Settings) -> None:
    app = create_app(settings)
    body = app.openapi()["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert body["schema"]["additionalProperties"] is False and set(body["schema"]["properties"]) == set(FORM_FIELDS)
    assert "application/zip" in body["encoding"]["file"]["contentType"]
    with TestClient(app) as client:
        resp = client.post("/v1/datasets", data={"val_fracton": "0.2"},
                           files={"file": ("a.zip", b"PK\x05\x06" + bytes(18), "application/zip")})
        assert resp.status_code == 422, resp.text
        assert "'val_fracton'" in resp.json()["detail"] and "val_fraction" in resp.json()["detail"]
        assert not list(settings.uploads_dir.glob("*"))  # the refused upload left nothing behind


def test_rules_json_schema_cannot_state_are_described(settings: Settings) -> None:
    doc = create_app(settings).openapi()
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]
    (explain,) = [p for p in predict["parameters"] if p["name"] == "explain"]
    assert f"at most {MAX_EXPLAIN_IMAGES} images" in explain["description"]
    files = predict["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["file"]
    assert f"at most {MAX_EXPLAIN_IMAGES}" in files["description"]
    search = doc["components"]["schemas"]["JobRequest"]["properties"]["search"]["anyOf"][0]["properties"]
    assert "at most max_epochs" in search["min_epochs"]["description"]
    assert "at least min_epochs" in search["max_epochs"]["description"]
    upload = doc["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert "real archive" in upload["properties"]["file"]["description"]
    rules = (Path(__file__).parents[1] / "schemathesis.toml").read_text()
    assert "min_epochs <= max_epochs" in rules and f"at most {MAX_EXPLAIN_IMAGES} images" in rules


def test_upload_refuses_a_form_field_sent_twice(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/datasets", data={"name": ["one", "two"]},
                           files={"file": ("a.zip", b"PK\x05\x06" + bytes(18), "application/zip")})
        assert resp.status_code == 422 and "'name' appears twice" in resp.json()["detail"], resp.text
