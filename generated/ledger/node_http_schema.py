"""JSON shapes of the node's REST API (surface ClientApi, @guarantee JsonShapes)
and its OpenAPI 3.1 document (surface ServiceDocument, @guarantee OpenApiMatchesApiSpec).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ledger.api import Config as ApiConfig
from ledger.core import Envelope, OperationKind

MAX_REQUEST_ID = ApiConfig().max_request_id_length


class EnvelopeInvalid(ValueError):
    """A body that is JSON but not a valid Envelope: 422."""


class EnvelopeBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/requests: exactly the Envelope's fields.

    ASSUMPTION: counterparty_id and owner may be omitted and then read as
    null (they are nullable); every other missing field is a 422.
    """

    client_id: str
    request_id: str
    kind: str
    account_id: str
    amount_minor: int
    counterparty_id: str | None = None
    owner: str | None = None


def envelope_from_json(data: Any) -> Envelope:
    """Validate decoded JSON into a core Envelope; EnvelopeInvalid says what is wrong."""
    if not isinstance(data, dict):
        raise EnvelopeInvalid("the body must be a JSON object")
    try:
        body = msgspec.convert(data, EnvelopeBody, strict=True)
    except msgspec.ValidationError as exc:
        raise EnvelopeInvalid(str(exc)) from None
    try:
        kind = OperationKind(body.kind)
    except ValueError:
        raise EnvelopeInvalid(f"kind must be one of {[k.value for k in OperationKind]}") from None
    for name in ("client_id", "request_id", "account_id"):
        if not getattr(body, name):
            raise EnvelopeInvalid(f"{name} must not be empty")
    if len(body.request_id) > MAX_REQUEST_ID:
        raise EnvelopeInvalid(f"request_id is longer than {MAX_REQUEST_ID} characters")
    if body.counterparty_id is not None and kind is not OperationKind.transfer:
        raise EnvelopeInvalid("counterparty_id is for transfers only")
    if body.owner is not None and kind is not OperationKind.open:
        raise EnvelopeInvalid("owner is for opens only")
    return Envelope(request_id=body.request_id, client_id=body.client_id, kind=kind,
                    account_id=body.account_id, counterparty_id=body.counterparty_id,
                    owner=body.owner, amount_minor=body.amount_minor)


# OpenAPI -------------------------------------------------------------------------------------

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_NINT = {"type": ["integer", "null"]}

SCHEMAS: dict[str, Any] = {
    "Envelope": {
        "type": "object", "additionalProperties": False,
        "required": ["client_id", "request_id", "kind", "account_id", "amount_minor"],
        "properties": {
            "client_id": _STR, "request_id": {"type": "string", "maxLength": MAX_REQUEST_ID},
            "kind": {"type": "string", "enum": [k.value for k in OperationKind]},
            "account_id": _STR, "counterparty_id": _NSTR, "owner": _NSTR, "amount_minor": _INT}},
    "Outcome": {
        "type": "object",
        "required": ["request_id", "client_id", "kind", "verdict", "reason", "account_id", "counterparty_id",
                     "account_delta_minor", "counterparty_delta_minor", "sequence", "epoch", "replayed"],
        "properties": {
            "request_id": _STR, "client_id": _STR, "kind": _STR,
            "verdict": {"type": "string", "enum": ["accepted", "rejected"]}, "reason": _NSTR,
            "account_id": _STR, "counterparty_id": _NSTR, "account_delta_minor": _INT,
            "counterparty_delta_minor": _INT, "sequence": _NINT, "epoch": _NINT, "replayed": {"type": "boolean"}}},
    "Pending": {
        "type": "object", "required": ["request_id", "status", "location"],
        "properties": {"request_id": _STR, "status": {"const": "pending"}, "location": _STR}},
    "Error": {"type": "object", "required": ["error"], "properties": {"error": _STR, "detail": _STR}},
    "Account": {
        "type": "object", "required": ["account_id", "owner", "status", "balance_minor", "version"],
        "properties": {"account_id": _STR, "owner": _STR, "status": {"type": "string", "enum": ["active", "closed"]},
                       "balance_minor": _INT, "version": _INT}},
    "Health": {
        "type": "object", "required": ["node_id", "status", "epoch", "leader"],
        "properties": {"node_id": _STR, "status": _STR, "epoch": _NINT, "leader": _NSTR}},
    "VoteRequest": {
        "type": "object", "required": ["batch_id", "epoch", "items", "reads"],
        "properties": {"batch_id": _STR, "epoch": _INT,
                       "items": {"type": "array", "items": {"$ref": "#/components/schemas/Envelope"}},
                       "reads": {"type": "array", "items": {"$ref": "#/components/schemas/Account"}}}},
    "Ballot": {
        "type": "object", "required": ["node_id", "batch_id", "epoch", "digests", "signature"],
        "properties": {"node_id": _STR, "batch_id": _STR, "epoch": _INT,
                       "digests": {"type": "array", "items": _STR}, "signature": _STR}},
}

_DESCRIPTIONS = {200: "OK", 202: "Accepted, still in the pipeline", 400: "Bad JSON", 401: "Unauthenticated peer",
                 404: "Not found", 409: "Request id reused", 413: "Body too large", 415: "Not JSON",
                 422: "Invalid body", 503: "Unavailable; took no effect (Retry-After: 1)"}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _responses(codes: dict[int, str | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for code, ref in codes.items():
        entry: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if ref == "text":
            entry["content"] = {"text/plain": {"schema": _STR}}
        elif ref == "list":
            entry["content"] = {"application/json": {"schema": {
                "type": "array", "items": {"$ref": "#/components/schemas/Health"}}}}
        elif ref is not None:
            entry["content"] = _json(ref)
        out[str(code)] = entry
    return out


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _STR}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route the node serves."""
    paths = {
        "/v1/requests": {"post": {
            "operationId": "submitRequest",
            "requestBody": {"required": True, "content": _json("Envelope")},
            "responses": _responses({200: "Outcome", 202: "Pending", 400: "Error", 409: "Error", 413: "Error",
                                     415: "Error", 422: "Error", 503: "Error"})}},
        "/v1/requests/{client_id}/{request_id}": {"get": {
            "operationId": "getRequest", "parameters": [_path_param("client_id"), _path_param("request_id")],
            "responses": _responses({200: "Outcome", 404: "Error", 503: "Error"})}},
        "/v1/accounts/{account_id}": {"get": {
            "operationId": "getAccount", "parameters": [_path_param("account_id")],
            "responses": _responses({200: "Account", 404: "Error", 503: "Error"})}},
        "/v1/nodes": {"get": {"operationId": "listNodes", "responses": _responses({200: "list", 503: "Error"})}},
        "/healthz": {"get": {"operationId": "health", "responses": _responses({200: "Health", 503: "Health"})}},
        "/metrics": {"get": {"operationId": "metrics", "responses": _responses({200: "text", 503: "Error"})}},
        "/openapi.json": {"get": {"operationId": "openapi", "responses": _responses({200: None})}},
        "/internal/votes": {"post": {
            "operationId": "castBallot", "requestBody": {"required": True, "content": _json("VoteRequest")},
            "responses": _responses({200: "Ballot", 400: "Error", 401: "Error", 413: "Error", 415: "Error",
                                     422: "Error", 503: "Error"})}},
    }
    paths["/openapi.json"]["get"]["responses"]["200"]["content"] = {"application/json": {"schema": {"type": "object"}}}
    return {"openapi": "3.1.0", "info": {"title": "ledger node", "version": "1"},
            "paths": paths, "components": {"schemas": SCHEMAS}}
