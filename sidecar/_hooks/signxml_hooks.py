"""signxml's private hooks: the references' payloads, their transforms, the digest.

signxml builds a signature in ``_build_sig`` (given the references and the nodes each
digests), writes each reference's transforms in ``_build_transforms_for_reference`` and
digests with ``_get_digest``. :class:`HookedXAdESSigner` turns these into public methods
a subclass overrides; nothing else in sidecar names them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lxml import etree
from signxml.algorithms import DigestAlgorithm
from signxml.xades import XAdESSigner

__all__ = ["HookedXAdESSigner"]


class HookedXAdESSigner(XAdESSigner):
    """signxml's XAdES signer with its private steps opened as public methods."""

    def reference_inputs(
        self, references: list[Any], inputs: list[Any]
    ) -> tuple[Sequence[Any], Sequence[Any]]:
        """The references (signxml ``SignatureReference``) and what each digests (an
        element, or the document), before the signature is built: unchanged by default."""
        return references, inputs

    def write_transforms(self, transforms_node: etree._Element, reference: Any) -> bool:
        """Write ``reference``'s transforms into ``transforms_node`` and answer True,
        or answer False to let signxml write its own (the default)."""
        return False

    def digest(self, data: bytes, algorithm: DigestAlgorithm) -> bytes:
        """``data``'s digest with ``algorithm``, as signxml computes it for references."""
        return self._get_digest(data, algorithm=algorithm)

    def _build_sig(
        self,
        sig_root: etree._Element,
        references: Sequence[Any],
        c14n_inputs: Sequence[Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        references, inputs = self.reference_inputs(list(references), list(c14n_inputs))
        return super()._build_sig(sig_root, references, inputs, *args, **kwargs)

    def _build_transforms_for_reference(
        self, *, transforms_node: etree._Element, reference: Any, **kwargs: Any
    ) -> None:
        if not self.write_transforms(transforms_node, reference):
            super()._build_transforms_for_reference(
                transforms_node=transforms_node, reference=reference, **kwargs
            )
