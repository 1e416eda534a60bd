"""List pagination (?limit=&offset=). Unlike DRF's default, a bad value is a 400 naming the
parameter, not silently ignored."""
from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


class StrictLimitOffsetPagination(LimitOffsetPagination):
    max_limit = 1000

    def _param(self, request, name: str, minimum: int, maximum: int | None = None) -> int | None:
        raw = request.query_params.getlist(name)
        if not raw:
            return None
        bounds = f"at least {minimum}" + (f" and at most {maximum}" if maximum is not None else "")
        try:
            if len(raw) > 1:
                raise ValueError
            value = int(raw[0])
        except ValueError:
            raise ValidationError({name: [f"Must be one integer, {bounds}."]}) from None
        if value < minimum or (maximum is not None and value > maximum):
            raise ValidationError({name: [f"Must be {bounds}."]})
        return value

    def get_limit(self, request) -> int:
        limit = self._param(request, self.limit_query_param, 1, self.max_limit)
        return self.default_limit if limit is None else limit

    def get_offset(self, request) -> int:
        return self._param(request, self.offset_query_param, 0, 2**63 - 1) or 0

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for p in params:
            limit = p["name"] == self.limit_query_param
            p["schema"].update(minimum=1 if limit else 0, maximum=self.max_limit if limit else 2**63 - 1)
        return params
