"""sidecar: a local signing and timestamping daemon for CNS standardized forms."""

__version__ = "0.1.0"
