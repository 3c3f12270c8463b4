"""photostyle core: config, plugin host, job runner, daemon. Knows no particular stage."""

from pipeline.hookspecs import hookimpl

__all__ = ["hookimpl"]
