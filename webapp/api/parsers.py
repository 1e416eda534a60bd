"""JSON input with a nesting limit (settings.API_MAX_JSON_DEPTH): a deeply nested request body
or JSON form field is a 400, never a RecursionError (500) in the parser, the serializers or
Postgres."""
from __future__ import annotations

from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser, MultiPartParser


def json_depth_exceeds(value, limit: int) -> bool:
    """Whether `value` nests lists/objects deeper than `limit` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


class LimitedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_JSON_DEPTH
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels.") from None
        if json_depth_exceeds(data, limit):
            raise ParseError(f"JSON parse error - nested deeper than {limit} levels.")
        return data


class LimitedJSONField(serializers.JSONField):
    """A JSON value, also when it arrives as a string in a form field (multipart uploads): too
    deep a nesting is a 400 on the field, like a JSON body's."""

    def to_internal_value(self, data):
        limit = settings.API_MAX_JSON_DEPTH
        try:
            value = super().to_internal_value(data)
        except RecursionError:
            raise serializers.ValidationError(f"Nested deeper than {limit} levels.") from None
        if json_depth_exceeds(value, limit):
            raise serializers.ValidationError(f"Nested deeper than {limit} levels.")
        return value


# The endpoints that take a file: multipart (the file and its form fields) beside JSON.
UPLOAD_PARSERS = [LimitedJSONParser, MultiPartParser]
