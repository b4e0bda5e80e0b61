"""Open Inference Protocol tensors: the binary-data layout both ways, and malformed requests named (400, never 500)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from service.http.v2_tensors import (
    OutputTensor,
    ProtocolError,
    bytes_elements,
    deserialize_bytes,
    encode_response,
    number_array,
    parse_request,
    serialize_bytes,
)


def test_binary_inputs_follow_the_json_in_order() -> None:
    photos = [b"\xff\xd8first", b"second\x00"]
    blob = serialize_bytes(photos)
    pixels = np.arange(6, dtype="<f4")
    head = json.dumps({"inputs": [
        {"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(blob)}},
        {"name": "pixels", "datatype": "FP32", "shape": [1, 6], "parameters": {"binary_data_size": 24}}],
        "outputs": [{"name": "labels", "parameters": {"classification": 3, "binary_data": True}}]}).encode()
    request = parse_request(head + blob + pixels.tobytes(), str(len(head)))
    assert bytes_elements(request.inputs[0]) == photos
    assert number_array(request.inputs[1]).tolist() == [[0, 1, 2, 3, 4, 5]]
    assert request.outputs[0].classification == 3 and request.outputs[0].binary is True


def test_responses_binary_and_json() -> None:
    probs = np.array([[0.25, 0.75]], np.float32)
    outputs = [OutputTensor("probabilities", "FP32", [1, 2], probs, True),
               OutputTensor("labels", "BYTES", [1, 1], [b"0.750000:1:bee"], True),
               OutputTensor("ood_score", "FP32", [1], np.array([np.nan], np.float32), False)]
    body, head = encode_response("m", 3, "req-1", outputs)
    assert head is not None
    meta = json.loads(body[:head])
    assert meta["model_version"] == "3" and meta["id"] == "req-1"
    assert meta["outputs"][2]["data"] == [None]  # JSON has no NaN
    rest = body[head:]
    assert np.frombuffer(rest[:8], "<f4").tolist() == [0.25, 0.75]
    assert deserialize_bytes(rest[8:], "labels") == [b"0.750000:1:bee"]
    assert meta["outputs"][1]["parameters"]["binary_data_size"] == len(rest) - 8


BINARY_HEAD = b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}}]}'
JSON_HEAD = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}'


@pytest.mark.parametrize(("body", "header", "named"), [
    (b"{", None, "not valid JSON"),
    (b'{"inputs": {}}', None, "'inputs' must be a non-empty list"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": []}]}', None, "non-negative"),
    (BINARY_HEAD, str(len(BINARY_HEAD)), "only 0 bytes"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', None, "neither 'data'"),
    (JSON_HEAD + b"junk", str(len(JSON_HEAD)), "belong to no input"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": 3}', None,
     "'outputs' must be a list"),
    (b"{}", "99", "Inference-Header-Content-Length"),
])
def test_malformed_requests_are_named(body: bytes, header: str | None, named: str) -> None:
    with pytest.raises(ProtocolError, match=named):
        parse_request(body, header)


def test_malformed_tensor_data_is_named() -> None:
    bad_b64 = parse_request(b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}',
                            None)
    with pytest.raises(ProtocolError, match="base64"):
        bytes_elements(bad_b64.inputs[0])
    short = parse_request(b'{"inputs": [{"name": "p", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]}',
                          None)
    with pytest.raises(ProtocolError, match="3 elements"):
        number_array(short.inputs[0])
    with pytest.raises(ProtocolError, match="ends inside"):
        deserialize_bytes(struct.pack("<I", 1) + b"a" + b"\x01", "image")
    text = parse_request(b'{"inputs": [{"name": "p", "datatype": "INT8", "shape": [1], "data": [1]}]}', None)
    with pytest.raises(ProtocolError, match="FP32"):
        number_array(text.inputs[0])
