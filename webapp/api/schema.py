"""OpenAPI description of the token authentication (imported by views.py so it is registered)."""
from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "webapp.accounts.auth.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "gft_...",
                "description": "A personal API token from the Tokens page: `Authorization: Bearer gft_...`."}
