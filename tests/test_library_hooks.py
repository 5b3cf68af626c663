"""The private library hooks fenced in ``sidecar/_hooks/``: each is still there, with the
signature relied on, and is actually taken on a real signature.

An upgrade of pyHanko, signxml, asn1crypto or cryptography that renames, re-signs or
stops calling one of them fails here by name (the engines' own tests would only show a
changed document or a slower signature).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import io
from collections.abc import Callable
from typing import Any

import pytest
from asn1crypto import cms, core
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from lxml import etree
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import attributes
from pyhanko.sign.signers.pdf_cms import Signer as PyHankoSigner
from signxml.xades import XAdESSigner

from sidecar._hooks import asn1crypto_hooks, cryptography_hooks, pyhanko_hooks, signxml_hooks
from sidecar.keys import Signer
from sidecar.keys.signxml_adapter import SignerEcKey, SignerRsaKey
from sidecar.signing import pades_draft
from sidecar.signing import xades as xades_module
from sidecar.signing.report import Level
from sidecar.signing.xades import XadesOptions, sign_xml
from sidecar.signing.xmldsig import ds
from tests.fixtures.pades import pdfsig_report
from tests.fixtures.xades import FORM


def _params(function: Callable[..., object]) -> list[tuple[str, inspect._ParameterKind]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD
_KW = inspect.Parameter.KEYWORD_ONLY


# -- the private names, with the signatures the hooks call or override ---------


def test_pyhanko_hooks_exist() -> None:
    assert _params(IncrementalPdfFileWriter._update_meta) == [("self", _POS)]
    # MetadataKeepingWriter(reader=...) passes it on as pyHanko's (internal) ``prev``.
    assert ("prev", _POS) in _params(IncrementalPdfFileWriter.__init__)
    names = [name for name, _ in _params(PyHankoSigner._signed_attr_providers)]
    assert names[:4] == ["self", "data_digest", "digest_algorithm", "attr_settings"]
    assert not inspect.isgeneratorfunction(PyHankoSigner.signed_attrs)  # async, awaits it
    assert inspect.iscoroutinefunction(PyHankoSigner.signed_attrs)


def test_signxml_hooks_exist() -> None:
    names = [name for name, _ in _params(XAdESSigner._build_sig)]
    assert names[:4] == ["self", "sig_root", "references", "c14n_inputs"]
    params = dict(_params(XAdESSigner._build_transforms_for_reference))
    assert params["transforms_node"] == _KW and params["reference"] == _KW
    assert [name for name, _ in _params(XAdESSigner._get_digest)] == ["self", "data", "algorithm"]


def test_asn1crypto_hooks_exist_and_behave() -> None:
    assert [name for name, _ in _params(core.Asn1Value._copy)] == ["self", "other", "copy_func"]
    # A loaded value caches its header in _header; cleared, dump() recomputes the same
    # bytes for a definite-length value (what DefiniteSignerInfo relies on).
    info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                {"subject_key_identifier": b"\x01" * 20},
            ),
            "digest_algorithm": {"algorithm": "sha256"},
            "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
            "signature": b"\x00" * 300,
        }
    )
    der = info.dump()
    definite = asn1crypto_hooks.as_definite_signer_info(info)
    assert type(definite) is asn1crypto_hooks.DefiniteSignerInfo
    assert definite._header is not None
    assert definite.dump() == der and definite._header is not None

    # _copy is what copy()/deepcopy() call: the received bytes follow the copy.
    token = cms.ContentInfo({"content_type": "data", "content": b"token"})
    received = asn1crypto_hooks.ReceivedContentInfo.received(token.dump())
    for duplicate in (received.copy(), copy.deepcopy(received)):
        assert duplicate._received == token.dump()


def test_cryptography_hooks_exist_and_behave() -> None:
    mgf = padding.MGF1(hashes.SHA256())
    assert cryptography_hooks.pss_salt_length(padding.PSS(mgf, 32)) == 32
    marker = padding.PSS.DIGEST_LENGTH
    assert cryptography_hooks.pss_salt_length(padding.PSS(mgf, marker)) is marker


def test_key_wrappers_implement_every_abstract_method(xades_signers: dict[str, Signer]) -> None:
    # cryptography's key classes are abstract: a release adding an abstract method
    # makes these wrappers uninstantiable (TypeError), which this catches first.
    assert isinstance(SignerRsaKey(xades_signers["pkcs12-rsa"]).key_size, int)
    assert isinstance(SignerEcKey(xades_signers["pkcs12-ec"]).key_size, int)


# -- the overrides are taken on a real signature --------------------------------


def _count(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[tuple[Any, ...]]:
    """Record the calls of ``owner.name`` (still calling it) while the test runs."""
    # The override itself, not a method inherited from the library.
    assert name in vars(owner), f"{owner.__name__} no longer defines {name}"
    calls: list[tuple[Any, ...]] = []
    original = getattr(owner, name)

    def recorded(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return calls


@pytest.mark.asyncio(loop_scope="session")
async def test_pades_signature_takes_the_pyhanko_and_asn1crypto_hooks(
    monkeypatch: pytest.MonkeyPatch, pades_signers: dict[str, Signer], fee_note_pdf: bytes
) -> None:
    # The engine runs these steps in worker processes; here they run in this one, so
    # that the calls are seen: the same functions, the key signing between them.
    meta = _count(monkeypatch, pyhanko_hooks.MetadataKeepingWriter, "_update_meta")
    hooked = _count(
        monkeypatch, pyhanko_hooks.AttrProviderRewritingSigner, "_signed_attr_providers"
    )
    drafter_class = pades_draft._Drafter
    assert issubclass(drafter_class, pyhanko_hooks.AttrProviderRewritingSigner)
    providers = _count(monkeypatch, drafter_class, "rewrite_provider")
    dumps = _count(monkeypatch, asn1crypto_hooks.DefiniteSignerInfo, "dump")
    monkeypatch.setattr(
        IncrementalPdfFileWriter,
        "_update_meta",
        lambda self: pytest.fail("pyHanko rewrote the metadata past the hook"),
    )
    signer = pades_signers["pkcs11-rsa"]
    certificate = signer.certificate.dump()
    chain = tuple(c.dump() for c in signer.chain)
    # In a thread: the steps drive pyHanko's async API on a loop of their own.
    prepared = await asyncio.to_thread(
        pades_draft.prepare,
        pades_draft.Prepare(
            fee_note_pdf, certificate, chain, "Signature1", "sha256", None, None, None, None,
            reserved=16384, dss=None, require_pdfa=True, max_objects=1000,
        ),
    )  # fmt: skip
    signature = await signer.sign(prepared.signed_attrs, digest="sha256")
    signed, _ = await asyncio.to_thread(
        pades_draft.assemble, prepared, certificate, chain, "sha256", signature, None
    )
    assert signed.startswith(fee_note_pdf)
    assert "Signature is Valid" in pdfsig_report(signed)
    assert meta, "pyHanko no longer calls _update_meta: metadata may be rewritten"
    assert hooked, "pyHanko no longer asks _signed_attr_providers for the attributes"
    kinds = {type(args[1]) for args in providers}
    assert attributes.SigningCertificateV2Provider in kinds, kinds
    assert dumps, "the SignerInfo is no longer ours when written"


def test_a_writer_given_the_reader_reads_nothing_again(
    monkeypatch: pytest.MonkeyPatch, fee_note_pdf: bytes
) -> None:
    # pades_draft.prepare checks the input through one reader and writes on it; the
    # facts of the result come from the writer's ``objects`` (the new revision), which
    # must be the objects a reading of the output finds in its last revision.
    reader = PdfFileReader(io.BytesIO(fee_note_pdf), strict=False)
    catalog = reader.root
    opened = _count(monkeypatch, PdfFileReader, "__init__")
    writer = pyhanko_hooks.MetadataKeepingWriter(
        io.BytesIO(fee_note_pdf), reader=reader, strict=False
    )
    assert writer.prev is reader and not opened, "the writer read the document again"
    assert writer.root is catalog  # resolved once, changed in place
    catalog["/Lang"] = generic.TextStringObject("fr-LU")
    writer.update_root()
    writer.add_object(generic.DictionaryObject({generic.NameObject("/X"): generic.NullObject()}))
    output = io.BytesIO()
    writer.write(output)
    reread = PdfFileReader(io.BytesIO(output.getvalue()), strict=False)
    last = reread.xrefs.total_revisions - 1
    written = {(ref.generation, ref.idnum) for ref in reread.xrefs.explicit_refs_in_revision(last)}
    assert set(writer.objects) == written
    assert str(reread.root["/Lang"]) == "fr-LU"


@pytest.mark.asyncio(loop_scope="session")
async def test_xades_signature_takes_the_signxml_hooks(
    monkeypatch: pytest.MonkeyPatch, xades_signers: dict[str, Signer]
) -> None:
    # The private overrides themselves: signxml must still call them.
    inputs = _count(monkeypatch, signxml_hooks.HookedXAdESSigner, "_build_sig")
    transforms = _count(
        monkeypatch, signxml_hooks.HookedXAdESSigner, "_build_transforms_for_reference"
    )
    digests = _count(monkeypatch, signxml_hooks.HookedXAdESSigner, "digest")
    # ...and through them, the engine's public overrides.
    engine_signer = xades_module._SidecarXAdESSigner
    assert issubclass(engine_signer, signxml_hooks.HookedXAdESSigner)
    payloads = _count(monkeypatch, engine_signer, "reference_inputs")
    written = _count(monkeypatch, engine_signer, "write_transforms")
    # Drafted in a thread of this process (no workers), so the calls are seen here.
    document = await sign_xml(
        FORM, xades_signers["pkcs12-ec"], Level.B_B, XadesOptions(allow_parallel=True)
    )
    assert inputs and transforms and digests
    assert payloads and written
    root = etree.fromstring(document)
    uris = [r.get("URI") for r in root.iter(ds("Reference"))]
    assert "" in uris, uris  # reference_inputs: the whole document as URI=""
    xpaths = list(root.iter(ds("XPath")))
    assert xpaths, "write_transforms: the parallel-mode XPath filter is missing"


# -- pyHanko's hex strings, read in one call ----------------------------------------

HEX_CASES = [
    b"<>",
    b"<48656C6C6F>",
    b"<48 65\n6c\r6C\t6F\x0c00>",
    b"<4865F>",  # odd: a final 0 is implied
    b"<" + b"0" * 20000 + b">",  # a signature placeholder, longer than one chunk
    b"<3082%a comment\n0A>",  # a comment inside: pyHanko's reader
]


@pytest.mark.parametrize("raw", HEX_CASES, ids=range(len(HEX_CASES)))
def test_hex_strings_read_as_pyhanko_reads_them(raw: bytes) -> None:

    tail = b" /Next 1"
    ours = io.BytesIO(raw + tail)
    theirs = io.BytesIO(raw + tail)
    value = pyhanko_hooks.read_hex_string(ours)
    expected = pyhanko_hooks._PYHANKO_READ_HEX(theirs)
    assert value == expected and type(value) is type(expected)
    assert ours.tell() == theirs.tell() == len(raw)  # left just past the '>'


def test_bad_hex_strings_fail_as_pyhanko_fails() -> None:
    from pyhanko.pdf_utils.misc import PdfStreamError

    for raw in (b"<48656Z>", b"<4865"):
        with pytest.raises(PdfStreamError):
            pyhanko_hooks.read_hex_string(io.BytesIO(raw))


def test_pyhanko_reads_hex_strings_through_the_hook(monkeypatch: pytest.MonkeyPatch) -> None:

    import sidecar.signing.pdf_checks  # noqa: F401  (installs the hook)

    # The name pyHanko's read_object calls must still be the module global we set.
    assert generic.read_hex_string_from_stream is pyhanko_hooks.read_hex_string
    calls = _count(monkeypatch, pyhanko_hooks, "read_hex_string")
    monkeypatch.setattr(generic, "read_hex_string_from_stream", pyhanko_hooks.read_hex_string)
    value = generic.read_object(io.BytesIO(b"<48656C6C6F> "), generic.Reference(1, 0))
    assert value == generic.pdf_string(b"Hello") and calls
