"""The package version, read by the build backend and written into output metadata."""

__version__ = "0.1.0"
