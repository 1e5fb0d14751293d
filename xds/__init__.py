"""IHE XDS.b affinity domain server."""

__version__ = "0.1.0"
