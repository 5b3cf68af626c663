"""The signing routes' side of ``[trust.lists] at_signing``: how the verdict is said.

The operations judge (:mod:`sidecar.operations.qualification`); here ``refuse`` becomes
a ``422 not_qualified`` instead of the document, and every signed answer carries
``X-Signature-Qualification`` saying what the signature will pass as.
"""

from __future__ import annotations

from ..operations.qualification import NotQualified
from ..trust.lists.signing import SigningVerdict
from .problems import Problem, register_problem_mapper

__all__ = ["HEADER", "qualification_headers"]

HEADER = "X-Signature-Qualification"


def _refused(exc: NotQualified) -> Problem:
    verdict = exc.verdict
    return Problem(
        422,
        "not_qualified",
        "; ".join(verdict.problems) + " ([trust.lists] at_signing = 'refuse')",
        headers={HEADER: verdict.header()},
    )


register_problem_mapper(NotQualified, _refused)


def qualification_headers(verdict: SigningVerdict | None) -> dict[str, str]:
    """The signed answer's qualification header; none without trusted lists."""
    return {HEADER: verdict.header()} if verdict is not None else {}
