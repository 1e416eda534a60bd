"""Versioned, archivable team resources (datasets, reward configs): one abstract model, its
services and the view decorator for their POST-only write actions."""
