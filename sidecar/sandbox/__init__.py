"""A self-contained test PKI for ``sidecar serve --sandbox`` and the test suite.

:func:`ensure_sandbox_pki` generates (once) a certomancer PKI under a directory: a root
CA, an intermediate CA, two physician signers (RSA and EC), an OCSP responder per CA, a
TSA and CRLs. :func:`serve_sandbox_pki` serves its TSA/OCSP/CRL/certificate endpoints
over loopback HTTP in the running event loop. Nothing here is fit for real signatures.
"""

from sidecar.sandbox.pki import (
    SandboxError,
    SandboxPKI,
    SandboxSigner,
    ensure_sandbox_pki,
    load_certomancer_config,
)
from sidecar.sandbox.services import serve_sandbox_pki

__all__ = [
    "SandboxError",
    "SandboxPKI",
    "SandboxSigner",
    "ensure_sandbox_pki",
    "load_certomancer_config",
    "serve_sandbox_pki",
]
