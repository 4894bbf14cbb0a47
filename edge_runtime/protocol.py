"""The Open Inference Protocol (KServe v2) infer request and reply bodies.

JSON tensors and the binary tensor extension, parsed with every field
checked by type and every size checked against the model's inputs before an
array is allocated (413), anything else wrong a 400; no HTTP here (server.py).
"""

from __future__ import annotations

import json
import math

import numpy as np

from .fields import is_int
DATATYPES = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
TO_DATATYPE = {v: k for k, v in DATATYPES.items()}
MAX_DIMS = 16  # a tensor shape with more dimensions is not a model input
JSON_CHARS_PER_VALUE = 32  # "-1.2345678901234567e-05, " fits: the largest JSON a tensor element needs
JSON_OVERHEAD = 64 * 1024  # names, shapes, parameters around the data
DEFAULT_MAX_BATCH = 16  # samples one request may carry (edge-run serve --max-batch)


class HttpError(Exception):
    """A reply other than 200: status, message, extra headers, and whether to close the connection."""

    def __init__(self, code: int, message: str, headers: dict | None = None, close: bool = False):
        super().__init__(message)
        self.code, self.message, self.headers, self.close = code, message, headers or {}, close


def tensor_json(spec: dict) -> dict:
    return {"name": spec["name"], "datatype": TO_DATATYPE[spec["dtype"]], "shape": spec["shape"]}


def max_elements(spec: dict, max_batch: int) -> int:
    """The most elements one request may give an input: max_batch samples of its shape."""
    return max_batch * math.prod(max(1, int(d)) for d in spec["shape"])


def json_limit(inputs: list[dict], max_batch: int) -> int:
    """The largest JSON request the model's inputs can need; a bigger one is refused before parsing.

    Parsed JSON costs ~30 bytes of Python objects per number: bounding the text
    by what the inputs need bounds that too, whatever --max-body says.
    """
    return JSON_OVERHEAD + JSON_CHARS_PER_VALUE * sum(max_elements(s, max_batch) for s in inputs)


def reply_limit(outputs: list[dict], max_batch: int) -> int:
    """The largest reply a request may get: each output once, for max_batch samples, as JSON.

    Replies are bounded as requests are (json_limit): binary data takes at
    most 8 bytes a value, JSON at most JSON_CHARS_PER_VALUE.
    """
    return json_limit(outputs, max_batch)


def check_reply(outputs: dict, names: list, limit: int) -> None:
    """Refuse a reply over ``limit`` bytes before it is encoded (413): never build what cannot be sent."""
    size = JSON_OVERHEAD + sum(outputs[name].size for name in names) * JSON_CHARS_PER_VALUE
    if size > limit:
        raise HttpError(413, f"the reply would take up to {size} bytes, over the {limit} bytes this server sends "
                             "for one request; send fewer samples at once", close=True)


def _parameters(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise HttpError(400, f"{where} 'parameters' must be a JSON object, found {type(params).__name__}")
    return params


def _input_array(item, expected: dict, blobs: bytes, offset: int, max_batch: int) -> tuple[str, np.ndarray, int]:
    """One entry of 'inputs' -> (name, array, new offset into the binary data); checked before allocating."""
    if not isinstance(item, dict) or not {"name", "shape", "datatype"} <= set(item):
        raise HttpError(400, "each input needs 'name', 'shape' and 'datatype'")
    name = item["name"]
    if not isinstance(name, str) or name not in expected:
        raise HttpError(400, f"unknown input '{str(name)[:80]}'; the model's inputs are {', '.join(expected)}")
    want = TO_DATATYPE[expected[name]["dtype"]]
    if item["datatype"] != want:
        raise HttpError(400, f"input '{name}' has datatype {str(item['datatype'])[:20]}, the model takes {want}")
    shape = item["shape"]
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(is_int(d) and d >= 0 for d in shape)):
        raise HttpError(400, f"input '{name}' shape must be a list of at most {MAX_DIMS} non-negative integers")
    count, limit = math.prod(shape), max_elements(expected[name], max_batch)
    if count > limit:
        raise HttpError(413, f"input '{name}' shape {shape} holds {count} values; this server takes at most "
                             f"{limit} ({max_batch} samples of {expected[name]['shape']})", close=True)
    dtype = np.dtype(DATATYPES[want])
    size = _parameters(item, f"input '{name}'").get("binary_data_size")
    if size is not None:
        if not is_int(size) or size != count * dtype.itemsize or offset + size > len(blobs):
            raise HttpError(400, f"input '{name}': binary data of {size} bytes does not fit shape {shape} {want}")
        return name, np.frombuffer(blobs, dtype=dtype, count=count, offset=offset).reshape(shape), offset + size
    if "data" not in item:
        raise HttpError(400, f"input '{name}' has neither 'data' nor parameters.binary_data_size")
    return name, _json_array(item["data"], name, shape, count, dtype), offset


def _json_array(data, name: str, shape: list, count: int, dtype: np.dtype) -> np.ndarray:
    """JSON 'data' (flat or nested lists) -> an array of the input's dtype; numbers only, in range.

    The parsed JSON is already bounded by json_limit, so numpy may size the
    array itself (one C pass: a per-value Python loop costs more than the model).
    """
    if not isinstance(data, list):
        raise HttpError(400, f"input '{name}' data must be a list of numbers, found {type(data).__name__}")
    try:
        array = np.array(data)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise HttpError(400, f"input '{name}' data is not a regular array of numbers: {str(exc)[:120]}") from None
    if array.size != count:
        raise HttpError(400, f"input '{name}' has {array.size} elements, shape {shape} needs {count}")
    if array.size and array.dtype.kind not in "biuf":  # strings, objects, integers beyond 64 bits
        raise HttpError(400, f"input '{name}' data holds {array.dtype.name} values, not numbers")
    if dtype.kind in "iu" and array.size and array.dtype.kind in "iuf":
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise HttpError(400, f"input '{name}' data has values outside {dtype.name} ({info.min}..{info.max})")
    return array.astype(dtype, copy=False).reshape(shape)


def _requested_outputs(request: dict, spec: dict) -> tuple[list, bool]:
    """The 'outputs' list -> (output names, binary data wanted for any)."""
    wanted = request.get("outputs")
    if wanted is None:
        wanted = []
    if not isinstance(wanted, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                               for o in wanted):
        raise HttpError(400, "'outputs' must be a list of objects with a 'name'")
    known = [s["name"] for s in spec["outputs"]]
    binary = bool(_parameters(request, "the request").get("binary_data_output"))
    seen = set()
    for o in wanted:
        if o["name"] not in known:
            raise HttpError(400, f"unknown output '{o['name'][:80]}'; the model's outputs are {', '.join(known)}")
        if o["name"] in seen:  # each copy would be encoded again: a small request, a reply without bound
            raise HttpError(400, f"output '{o['name'][:80]}' is asked for twice; name each output once")
        seen.add(o["name"])
        binary = binary or bool(_parameters(o, f"output '{o['name']}'").get("binary_data"))
    return [o["name"] for o in wanted] or known, binary


def parse_json_request(body: bytes, header_length: int | None, spec: dict,
                       max_batch: int = DEFAULT_MAX_BATCH) -> tuple[dict, list, bool, object]:
    """A v2 infer request -> (feeds, requested outputs, binary outputs wanted, request id).

    Every field is checked by type; sizes are checked against the model's
    inputs before anything is allocated (413); anything else wrong is a 400.
    """
    head, blobs = (body, b"") if header_length is None else (body[:header_length], body[header_length:])
    limit = json_limit(spec["inputs"], max_batch)
    if len(head) > limit:
        raise HttpError(413, f"JSON request of {len(head)} bytes is over the {limit} bytes the model's inputs can "
                             "need; send tensors as binary data or a .npy/.npz body", close=True)
    try:
        request = json.loads(head)
    except RecursionError:
        raise HttpError(400, "request body is not valid JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, and ints over Python's digit limit
        raise HttpError(400, f"request body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise HttpError(400, "request must be a JSON object with an 'inputs' list")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise HttpError(400, f"'id' must be a string, found {type(request_id).__name__}")
    expected = {s["name"]: s for s in spec["inputs"]}
    feeds, offset = {}, 0
    for item in request["inputs"]:
        name, array, offset = _input_array(item, expected, blobs, offset, max_batch)
        if name in feeds:
            raise HttpError(400, f"input '{name}' is given twice")
        feeds[name] = array
    if offset != len(blobs):
        raise HttpError(400, f"{len(blobs) - offset} bytes of binary data follow the inputs that no input claims")
    names, binary = _requested_outputs(request, spec)
    return feeds, names, binary, request_id


def encode_response(model: str, outputs: dict, names: list, binary: bool, request_id) -> tuple[bytes, dict]:
    parts, blobs = [], []
    for name in names:
        value = np.ascontiguousarray(outputs[name])
        entry = {"name": name, "datatype": TO_DATATYPE[value.dtype.name], "shape": list(value.shape)}
        if binary:
            data = value.tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            blobs.append(data)
        else:
            entry["data"] = value.ravel().tolist()
        parts.append(entry)
    head = {"model_name": model, "outputs": parts}
    if request_id is not None:
        head["id"] = request_id
    text = json.dumps(head).encode()
    if not binary:
        return text, {"Content-Type": "application/json"}
    return text + b"".join(blobs), {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(text))}
