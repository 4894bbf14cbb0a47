"""An OpenAPI 3 description of what `edge-run serve` answers (GET /v2/openapi.json).

Modelled on the Open Inference Protocol v2 REST specification (KServe's
``rest_predict_v2.yaml``), narrowed to what this server serves: one model,
its own input names and datatypes. It is what the fuzz test (schemathesis)
drives, so it names every status a client mistake can get: none is a 5xx
except 503 (loading, busy, shutting down).
"""

from __future__ import annotations

ERROR = {"$ref": "#/components/schemas/Error"}
TENSOR_META = {
    "type": "object", "required": ["name", "datatype", "shape"],
    "properties": {"name": {"type": "string"}, "datatype": {"type": "string"},
                   "shape": {"type": "array", "items": {"type": "integer"}}},
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    words = {400: "malformed request", 401: "missing or wrong bearer token (--token-file)",
             404: "unknown model or endpoint", 405: "method not allowed", 411: "Content-Length required",
             413: "body or tensors larger than the model can need", 415: "content type not taken",
             421: "Host not served", 503: "model loading, server busy or shutting down (Retry-After)"}
    return {str(c): _json(ERROR, words[c]) for c in codes}


def openapi_document(spec: dict, model: str) -> dict:
    """The document for a server of ``model`` whose tensors are ``spec`` ({"inputs", "outputs"})."""
    from .protocol import TO_DATATYPE

    inputs = [s["name"] for s in spec["inputs"]]
    outputs = [s["name"] for s in spec["outputs"]]
    model_param = {"name": "model_name", "in": "path", "required": True,
                   "schema": {"type": "string", "enum": [model]}}
    request_input = {
        "type": "object", "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"type": "string", "enum": inputs},
            "shape": {"type": "array", "maxItems": 8, "items": {"type": "integer", "minimum": 0, "maximum": 64}},
            "datatype": {"type": "string", "enum": sorted({TO_DATATYPE[s["dtype"]] for s in spec["inputs"]})},
            "parameters": {"type": "object"},
            "data": {"type": "array", "maxItems": 64, "items": {"type": "number"}},
        },
    }
    infer_request = {
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object",
                           "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 4, "items": request_input},
            "outputs": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string", "enum": outputs}, "parameters": {"type": "object"}}}},
        },
    }
    infer_response = {
        "type": "object", "required": ["model_name", "outputs"],
        "properties": {"model_name": {"type": "string"}, "id": {"type": "string"},
                       "outputs": {"type": "array", "items": {
                           **TENSOR_META, "properties": {**TENSOR_META["properties"], "data": {"type": "array"},
                                                         "parameters": {"type": "object"}}}}},
    }
    secured = [{"bearer": []}, {}]  # the token is asked only when the server has --token-file
    return {
        "openapi": "3.0.3",
        "info": {"title": "edge-run serve (Open Inference Protocol v2, REST)", "version": "2"},
        "paths": {
            "/v2/health/live": {"get": {"responses": {
                "200": _json({"type": "object", "properties": {"live": {"type": "boolean"}}}, "live")}}},
            "/v2/health/ready": {"get": {"responses": {
                "200": _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}, "ready"),
                "503": _json({"type": "object", "properties": {"ready": {"type": "boolean"}}}, "not ready")}}},
            "/v2": {"get": {"responses": {"200": _json({
                "type": "object", "required": ["name", "version", "extensions"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                               "extensions": {"type": "array", "items": {"type": "string"}}}}, "server metadata")}}},
            "/v2/models/{model_name}": {"get": {
                "parameters": [model_param], "security": secured,
                "responses": {"200": _json({
                    "type": "object", "required": ["name", "platform", "inputs", "outputs"],
                    "properties": {"name": {"type": "string"}, "platform": {"type": "string"},
                                   "versions": {"type": "array", "items": {"type": "string"}},
                                   "inputs": {"type": "array", "items": TENSOR_META},
                                   "outputs": {"type": "array", "items": TENSOR_META}}}, "model metadata"),
                              **_errors(401, 404, 503)}}},
            "/v2/models/{model_name}/ready": {"get": {
                "parameters": [model_param], "security": secured,
                "responses": {"200": _json({"type": "object", "properties": {
                    "name": {"type": "string"}, "ready": {"type": "boolean"}}}, "model ready"),
                    **_errors(401, 404, 503)}}},
            "/v2/models/{model_name}/infer": {"post": {
                "parameters": [model_param], "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {"schema": infer_request}}},
                "responses": {"200": _json(infer_response, "inference result"),
                              **_errors(400, 401, 404, 411, 413, 415, 503)}}},
            "/metrics": {"get": {"responses": {"200": {
                "description": "Prometheus text exposition",
                "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
