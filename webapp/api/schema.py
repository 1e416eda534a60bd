"""OpenAPI additions: the token authentication scheme (imported by views.py so it is registered)
and the error answers every operation can give (a drf-spectacular postprocessing hook), so the
schema describes every status code the API sends."""
from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "webapp.accounts.auth.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "gft_...",
                "description": "A personal API token from the Tokens page: `Authorization: Bearer gft_...`."}


_DETAIL = {"$ref": "#/components/schemas/ErrorDetail"}
_FIELDS = {"$ref": "#/components/schemas/FieldErrors"}
ERROR_SCHEMAS = {
    "ErrorDetail": {"type": "object", "properties": {"detail": {"type": "string"}}, "required": ["detail"]},
    "FieldErrors": {
        "type": "object",
        "description": 'Bad input: {"field": ["what is wrong"], ...} (or {"detail": "..."} for an unreadable body)',
        "additionalProperties": {"oneOf": [{"type": "array", "items": {"type": "string"}},
                                           {"type": "object"}, {"type": "string"}]},
    },
}
# status -> (description, body schema, which operations: "all", "params" (takes input), "body" (has a
# request body), "object" (names one))
ERROR_RESPONSES = {
    "400": ("bad input: the fields that are wrong, and why", _FIELDS, "params"),
    "401": ("no credentials, or an invalid, revoked or expired API token", _DETAIL, "all"),
    "403": ("not allowed: your role in the team, or a read-only token on a write", _DETAIL, "all"),
    "404": ("no such object in your teams (another team's objects are not found either)", _DETAIL, "object"),
    "415": ("a request body of a content type this operation does not read", _DETAIL, "body"),
    "429": ("too many requests: wait Retry-After seconds; or a team quota is reached (launch, resume, "
            "upload: TEAM_MAX_ACTIVE_RUNS, TEAM_MAX_STORAGE_BYTES), the body names it: "
            '{"detail", "quota", "limit", "used"}', _DETAIL, "all"),
}


def add_error_responses(result: dict, generator, request, public) -> dict:
    """Postprocessing hook: document the error answers of each operation (unless a view already does)."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(ERROR_SCHEMAS)
    for path, item in result.get("paths", {}).items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            has_input = bool(op.get("parameters")) or "requestBody" in op
            # Creating in a team can name one (404 when it is not yours); a path with {id} names one.
            names_object = "{" in path or method == "post"
            for code, (description, schema, which) in ERROR_RESPONSES.items():
                wanted = which == "all" or (which == "params" and (has_input or "{" in path)) or \
                    (which == "body" and "requestBody" in op) or (which == "object" and names_object)
                if wanted and code not in op["responses"]:
                    op["responses"][code] = {"description": description,
                                             "content": {"application/json": {"schema": schema}}}
            if "429" in op["responses"]:
                op["responses"]["429"].setdefault("headers", {"Retry-After": {
                    "schema": {"type": "integer"}, "description": "seconds to wait"}})
    return result
