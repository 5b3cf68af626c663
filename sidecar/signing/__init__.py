"""Signature engines: XAdES (XML), PAdES (PDF), and the standardized-form recipe."""
