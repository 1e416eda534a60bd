"""/api/docs/ works offline: Swagger UI's files are served by this app (drf-spectacular-sidecar),
the page names no other host, and every file it loads is there."""
from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest

pytestmark = pytest.mark.django_db


def test_api_docs_reference_no_external_host(client):
    resp = client.get("/api/docs/")
    assert resp.status_code == 200
    html = resp.content.decode()
    # Absolute URLs anywhere in the page (attributes and inline script alike): none.
    absolute = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'<>]*", html)
    assert absolute == [], absolute
    loaded = re.findall(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["']([^"']+)["']""", html)
    assert any(u.endswith("swagger-ui-bundle.js") for u in loaded), loaded
    assert any(u.endswith("swagger-ui.css") for u in loaded), loaded
    for url in loaded:
        assert not urlparse(url).netloc, url
        file = client.get(url)
        assert file.status_code == 200, url
        assert b"".join(file.streaming_content if file.streaming else [file.content]), url
