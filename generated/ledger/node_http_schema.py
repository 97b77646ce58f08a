"""JSON shapes of the node's REST API (surface ClientApi, @guarantee JsonShapes)
and its OpenAPI 3.1 document (surface ServiceDocument, @guarantee OpenApiMatchesApiSpec).
"""

from __future__ import annotations

from typing import Any

import msgspec

from ledger.api import Config as ApiConfig
from ledger.core import Config as CoreConfig
from ledger.core import Envelope, OperationKind

# The bounds the server enforces on a submission.  The OpenAPI document below is built
# from these same constants, so "valid by the document" and "accepted by the server"
# cannot drift apart (ClientApi: a document-valid request is never refused with 422).
MAX_REQUEST_ID = ApiConfig().max_request_id_length
# ASSUMPTION: the specs bound only request_id's length (api.allium's
# max_request_id_length); client_id, account_id, counterparty_id and owner get the
# same bound, so every id is bounded and a document-valid body always fits in
# max_body_bytes (5 x 128 characters, even fully \u-escaped, is far below 16 KiB).
MAX_ID = MAX_REQUEST_ID
MAX_OWNER = MAX_REQUEST_ID
# AdmitRequest's requires: 0 <= amount_minor <= core/config.max_amount_minor.
MIN_AMOUNT = 0
MAX_AMOUNT = CoreConfig().max_amount_minor
KINDS = tuple(k.value for k in OperationKind)


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


def _check_length(name: str, value: str | None, minimum: int, maximum: int) -> None:
    if value is not None and not minimum <= len(value) <= maximum:
        raise EnvelopeInvalid(f"{name} must be {minimum} to {maximum} characters long")


def envelope_from_json(data: Any) -> Envelope:
    """Validate decoded JSON into a core Envelope; EnvelopeInvalid says what is wrong.

    Every check here is stated in the ``Envelope`` schema of the OpenAPI document.
    """
    if not isinstance(data, dict):
        raise EnvelopeInvalid("the body must be a JSON object")
    amount = data.get("amount_minor")
    if isinstance(amount, float) and amount.is_integer():
        # JSON Schema's "integer" is any number with a zero fraction, so 223.0 is valid by
        # the document and must be accepted as 223 (found by schemathesis, ST202).
        data = {**data, "amount_minor": int(amount)}
    try:
        body = msgspec.convert(data, EnvelopeBody, strict=True)
    except msgspec.ValidationError as exc:
        raise EnvelopeInvalid(str(exc)) from None
    if body.kind not in KINDS:
        raise EnvelopeInvalid(f"kind must be one of {list(KINDS)}")
    kind = OperationKind(body.kind)
    for name, limit in (("client_id", MAX_ID), ("request_id", MAX_REQUEST_ID), ("account_id", MAX_ID),
                        ("counterparty_id", MAX_ID)):
        _check_length(name, getattr(body, name), 1, limit)
    _check_length("owner", body.owner, 0, MAX_OWNER)
    if not MIN_AMOUNT <= body.amount_minor <= MAX_AMOUNT:
        raise EnvelopeInvalid(f"amount_minor must be between {MIN_AMOUNT} and {MAX_AMOUNT}")
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
_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID}


def _only_for(kind: str, field: str) -> dict[str, Any]:
    """JSON Schema 2020-12: ``field`` must be null (or absent) unless kind is ``kind``."""
    return {"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "else": {"properties": {field: {"type": "null"}}}}


ENVELOPE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["client_id", "request_id", "kind", "account_id", "amount_minor"],
    "properties": {
        "client_id": _ID,
        "request_id": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID},
        "kind": {"type": "string", "enum": list(KINDS)},
        "account_id": _ID,
        "counterparty_id": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_ID,
                            "description": "transfers only; null otherwise"},
        "owner": {"type": ["string", "null"], "maxLength": MAX_OWNER, "description": "opens only; null otherwise"},
        "amount_minor": {"type": "integer", "minimum": MIN_AMOUNT, "maximum": MAX_AMOUNT}},
    "allOf": [_only_for("transfer", "counterparty_id"), _only_for("open", "owner")],
}

SCHEMAS: dict[str, Any] = {
    "Envelope": ENVELOPE_SCHEMA,
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


def _path_param(name: str, schema: dict[str, Any] = _ID) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


# ClientApi: POST /v1/requests links to its status, GET /v1/requests/{client_id}/{request_id}.
# The ids come from the request body, the one place both always are.
# ASSUMPTION: the link is on the 200 answer only: a 202 means the outcome is not
# readable yet (GET may still say 404), and its body already carries the location.
STATUS_LINK: dict[str, Any] = {"GetRequestStatus": {
    "operationId": "getRequest",
    "parameters": {"client_id": "$request.body#/client_id", "request_id": "$request.body#/request_id"},
    "description": "The stored outcome of this submission."}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route the node serves."""
    paths: dict[str, Any] = {
        "/v1/requests": {"post": {
            "operationId": "submitRequest",
            "requestBody": {"required": True, "content": _json("Envelope")},
            "responses": _responses({200: "Outcome", 202: "Pending", 400: "Error", 409: "Error", 413: "Error",
                                     415: "Error", 422: "Error", 503: "Error"})}},
        "/v1/requests/{client_id}/{request_id}": {"get": {
            "operationId": "getRequest",
            "parameters": [_path_param("client_id"), _path_param("request_id", {
                "type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID})],
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
    paths["/v1/requests"]["post"]["responses"]["200"]["links"] = STATUS_LINK
    paths["/openapi.json"]["get"]["responses"]["200"]["content"] = {"application/json": {"schema": {"type": "object"}}}
    return {"openapi": "3.1.0", "info": {"title": "ledger node", "version": "1"},
            "paths": paths, "components": {"schemas": SCHEMAS}}
