"""Static files as production serves them (STATIC_ROOT set, after collectstatic).

WhiteNoise's CompressedManifestStaticFilesStorage: every file gets a content hash in its name (so
WhiteNoise sends it with `Cache-Control: max-age=315360000, public, immutable`) and a gzip and a
brotli copy (sent to browsers that accept them: plotly.min.js 4.8 MB -> ~1 MB). The page scripts are
ES modules: their relative imports (`import ... from "./charts.js"`) are rewritten to the hashed
names too, so a module graph is cached as one immutable set.
"""
from __future__ import annotations

import os
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.files.storage import FileSystemStorage
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    support_js_module_import_aggregation = True
    # A source map named in a vendored file (plotly's) that is not shipped must not fail collectstatic.
    manifest_strict = False

    def compress_files(self, paths):
        """Compress only files not compressed yet: a hashed name fixes the content, so a later
        collectstatic (each `./studio up`) skips plotly.min.js's brotli pass (~30 s on a loaded core)."""
        todo = [p for p in paths if not (os.path.exists(self.path(p) + ".br") or os.path.exists(self.path(p) + ".gz"))]
        yield from super().compress_files(todo)


class PlotlyFinder(BaseFinder):
    """plotly.min.js of the pinned plotly wheel as static `plotly/plotly.min.js`, and nothing else of
    the wheel's package_data (its 5 MB widget bundle, templates and data sets are not pages' files)."""

    path = "plotly/plotly.min.js"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import plotly

        self.storage = FileSystemStorage(location=str(Path(plotly.__file__).parent / "package_data"))
        self.storage.prefix = "plotly"

    def check(self, **kwargs):
        return []

    def find(self, path, find_all=False, **kwargs):
        find_all = find_all or kwargs.get("all", False)
        found = self.storage.path("plotly.min.js") if path == self.path else None
        if find_all:
            return [found] if found else []
        return found

    def list(self, ignore_patterns):
        yield "plotly.min.js", self.storage
