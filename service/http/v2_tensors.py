"""Open Inference Protocol v2 tensors over HTTP: requests in, responses out (no model knowledge here).

A request body is JSON, or (the binary-data extension) JSON followed by raw tensor bytes, the JSON's
length in the ``Inference-Header-Content-Length`` header; an input sent that way says its byte size in
``parameters.binary_data_size`` and its bytes follow in the order of the inputs. A ``BYTES`` tensor in
binary form is each element's 4-byte little-endian length followed by its bytes (Triton's layout); in
JSON it is a list of strings, so an encoded photo travels base64-encoded there (KServe's image examples).
Outputs go back the same way: binary when the output's ``parameters.binary_data`` (or the request's
``parameters.binary_data_output``) asks for it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
# numpy dtypes of the datatypes this service reads or writes (little-endian, as the extension says).
NUMPY_TYPES = {"FP32": "<f4", "FP64": "<f8", "FP16": "<f2", "BOOL": "|b1", "INT64": "<i8", "INT32": "<i4"}


class ProtocolError(ValueError):
    """The request does not follow the protocol; the message says what and how to fix it (400)."""


@dataclass
class InputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: Any  # the JSON ``data`` (list), or the raw bytes of the binary extension

    @property
    def count(self) -> int:
        return math.prod(self.shape)


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's binary_data_output decides
    classification: int | None = None  # the classification extension: top-k as "score:index:label"


@dataclass
class InferRequest:
    inputs: list[InputTensor]
    outputs: list[RequestedOutput]  # empty: every output the model has
    parameters: dict[str, Any] = field(default_factory=dict)
    id: str | None = None

    @property
    def binary_output(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    array: np.ndarray | list[bytes]  # numbers, or BYTES elements
    binary: bool


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"{what} must be a non-negative integer (got {value!r})")
    return value


def _header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        head, rest = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise ProtocolError(f"{HEADER_LENGTH} must be the byte length of the JSON at the start of the body "
                                f"(at most {len(body)}); got {header_length!r}")
        head, rest = body[:int(header_length)], body[int(header_length):]
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        hint = "" if header_length is not None else \
            f" (a body with binary tensors needs the {HEADER_LENGTH} header)"
        raise ProtocolError(f"the inference request is not valid JSON{hint}: {exc}") from exc
    if not isinstance(request, dict):
        raise ProtocolError("the inference request must be a JSON object with 'inputs'")
    return request, rest


def _params(raw: dict[str, Any], what: str) -> dict[str, Any]:
    params = raw.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError(f"{what}: 'parameters' must be an object")
    return params


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's tensors; raises :class:`ProtocolError`."""
    request, binary = _header(body, header_length)
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("'inputs' must be a non-empty list of tensors {name, datatype, shape, data}")
    inputs, offset = [], 0
    for n, raw in enumerate(raw_inputs, start=1):
        if not isinstance(raw, dict):
            raise ProtocolError(f"input {n} must be an object {{name, datatype, shape, data}}")
        name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str):
            raise ProtocolError(f"input {n} needs a 'name' and a 'datatype' (strings)")
        if not isinstance(shape, list) or not shape:
            raise ProtocolError(f"input {name!r} needs a 'shape', a list of dimensions")
        dims = [_positive_int(d, f"input {name!r} shape") for d in shape]
        params = _params(raw, f"input {name!r}")
        if "binary_data_size" in params:
            size = _positive_int(params["binary_data_size"], f"input {name!r} binary_data_size")
            if offset + size > len(binary):
                raise ProtocolError(f"input {name!r} says binary_data_size {size} but only {len(binary) - offset} "
                                    "bytes follow the JSON")
            data: Any = binary[offset:offset + size]
            offset += size
        elif "data" in raw:
            data = raw["data"]
        else:
            raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        inputs.append(InputTensor(name, datatype.upper(), dims, data))
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes after the JSON belong to no input's binary_data_size")
    outputs = []
    raw_outputs = request.get("outputs") or []
    if not isinstance(raw_outputs, list):
        raise ProtocolError("'outputs' must be a list of {name, parameters}")
    for raw in raw_outputs:
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError("each of 'outputs' must be an object with a 'name'")
        params = _params(raw, f"output {raw['name']!r}")
        k = params.get("classification")
        outputs.append(RequestedOutput(
            raw["name"], None if "binary_data" not in params else bool(params["binary_data"]),
            None if k is None else _positive_int(k, f"output {raw['name']!r} classification") or None))
    parameters = _params(request, "the request")
    rid = request.get("id")
    return InferRequest(inputs, outputs, parameters, None if rid is None else str(rid))


def deserialize_bytes(buffer: bytes, what: str) -> list[bytes]:
    """Triton's binary BYTES layout: per element a uint32 little-endian length, then the bytes."""
    items, offset = [], 0
    while offset < len(buffer):
        if offset + 4 > len(buffer):
            raise ProtocolError(f"{what}: the binary BYTES data ends inside an element's 4-byte length")
        (size,) = struct.unpack_from("<I", buffer, offset)
        offset += 4
        if offset + size > len(buffer):
            raise ProtocolError(f"{what}: an element says {size} bytes but only {len(buffer) - offset} follow")
        items.append(bytes(buffer[offset:offset + size]))
        offset += size
    return items


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def bytes_elements(tensor: InputTensor) -> list[bytes]:
    """A BYTES input's elements: raw in binary form, base64 strings in JSON."""
    if isinstance(tensor.data, bytes):
        items = deserialize_bytes(tensor.data, f"input {tensor.name!r}")
    else:
        try:
            flat = _flatten(tensor.data)
        except RecursionError as exc:
            raise ProtocolError(f"input {tensor.name!r}: data is nested too deeply") from exc
        items = []
        for i, value in enumerate(flat):
            if not isinstance(value, str):
                raise ProtocolError(f"input {tensor.name!r} element {i}: BYTES data in JSON must be strings")
            try:
                items.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError) as exc:
                raise ProtocolError(
                    f"input {tensor.name!r} element {i} is not base64: an encoded image in JSON must be base64; "
                    "or send it as binary data (tritonclient: set_data_from_numpy(..., binary_data=True))") from exc
    if len(items) != tensor.count:
        raise ProtocolError(f"input {tensor.name!r} has shape {tensor.shape} ({tensor.count} elements) but "
                            f"{len(items)} elements of data")
    return items


def number_array(tensor: InputTensor) -> np.ndarray:
    """A numeric input as an array of its shape (float32 for the model)."""
    dtype = NUMPY_TYPES.get(tensor.datatype)
    if dtype is None:
        raise ProtocolError(f"input {tensor.name!r}: datatype {tensor.datatype} is not accepted; send FP32 "
                            "(preprocessed pixels) or BYTES (encoded images)")
    try:
        if isinstance(tensor.data, bytes):
            if len(tensor.data) != tensor.count * np.dtype(dtype).itemsize:
                raise ProtocolError(f"input {tensor.name!r}: {len(tensor.data)} bytes of binary data do not fit "
                                    f"shape {tensor.shape} of {tensor.datatype}")
            flat = np.frombuffer(tensor.data, dtype=dtype)
        else:
            flat = np.asarray(_flatten(tensor.data), dtype=dtype)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"input {tensor.name!r}: data is not a list of {tensor.datatype} numbers ({exc})") from exc
    if flat.size != tensor.count:
        raise ProtocolError(f"input {tensor.name!r} has shape {tensor.shape} ({tensor.count} elements) but "
                            f"{flat.size} elements of data")
    return flat.reshape(tensor.shape).astype(np.float32, copy=False)


def _flatten(data: Any) -> list[Any]:
    """JSON tensor data: row-major flat, or nested lists (both are allowed by the protocol)."""
    if not isinstance(data, list):
        raise ProtocolError("tensor 'data' must be a list")
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def encode_response(model: str, version: int, request_id: str | None,
                    outputs: list[OutputTensor]) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON's length for ``HEADER_LENGTH``."""
    views, blobs = [], []
    for out in outputs:
        view: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": out.shape}
        if out.binary:
            if out.datatype == "BYTES":
                assert isinstance(out.array, list)
                blob = serialize_bytes(out.array)
            else:
                assert isinstance(out.array, np.ndarray)
                blob = np.ascontiguousarray(out.array, dtype=NUMPY_TYPES[out.datatype]).tobytes()
            view["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif out.datatype == "BYTES":
            assert isinstance(out.array, list)
            view["data"] = [item.decode() for item in out.array]
        else:
            assert isinstance(out.array, np.ndarray)
            # JSON has no NaN: a number the model could not give is null
            view["data"] = [None if isinstance(x, float) and not math.isfinite(x) else x
                            for x in out.array.reshape(-1).tolist()]
        views.append(view)
    response: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": views}
    if request_id is not None:
        response["id"] = request_id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
