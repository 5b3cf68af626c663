"""The signing routes' side of ``[trust.lists] at_signing``: how the verdict is said.

The operations judge (:mod:`sidecar.operations.qualification`); ``refuse`` becomes a
``422 not_qualified`` instead of the document (:mod:`sidecar.api.problems`), and every
signed answer carries ``X-Signature-Qualification`` saying what the signature will pass
as.
"""

from __future__ import annotations

from ..trust.lists.signing import SigningVerdict

__all__ = ["HEADER", "qualification_headers"]

HEADER = "X-Signature-Qualification"


def qualification_headers(verdict: SigningVerdict | None) -> dict[str, str]:
    """The signed answer's qualification header; none without trusted lists."""
    return {HEADER: verdict.header()} if verdict is not None else {}
