"""The package version, in a module of its own: the HTTP layer sends it as its User-Agent
without importing the package (and with it every layer above the HTTP one)."""

__version__ = "0.1.0"
