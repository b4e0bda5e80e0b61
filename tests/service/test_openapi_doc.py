"""The OpenAPI document says what the routes do, and /docs works offline (packaged Swagger UI files)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from core.settings import Settings
from service.app import create_app

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
                # The Open Inference Protocol writes its errors as {"error": string} (service/routes/v2.py).
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
