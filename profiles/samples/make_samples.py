"""Build the sample PDF/A-2b documents in profiles/samples/ (and, for the tests, others).

    .venv/bin/python profiles/samples/make_samples.py      # rewrites fee-note.pdf

The PDF is written by hand, object by object, so that every PDF/A-2b requirement it
meets is visible here (ISO 19005-2, clause numbers in the comments):

- header ``%PDF-1.7`` and a comment line of four bytes above 127 (6.1.2);
- a cross-reference table with exact offsets, a trailer ``/ID`` (6.1.3), no encryption;
- the only font used, DejaVu Sans, embedded as a TrueType subset with ``/Widths`` taken
  from its ``hmtx`` and a (3,1) ``cmap`` (6.2.11.4, 6.2.11.5, 6.2.11.6);
- an OutputIntent ``/GTS_PDFA1`` with an ICC sRGB-like monitor profile built below
  (6.2.3), so that the device colour used by the text is defined (6.2.4.3);
- an uncompressed XMP metadata stream with ``pdfaid:part=2``, ``pdfaid:conformance=B``
  (6.6.4), and Info entries that agree with their XMP equivalents (6.6.3:
  Title/dc:title, Creator/xmp:CreatorTool, Producer/pdf:Producer, dates).

The output is deterministic (fixed dates and ``/ID``): re-running gives the same bytes.
What is *not* proven here: conformance per veraPDF (not available offline); the
project's own checks (sidecar.signing.pdf_checks) verify the markers they can.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from sidecar.signing.pdf_font import TrueTypeFont, font_objects, winansi_encode  # noqa: E402

__all__ = ["build_pdfa", "srgb_icc_profile"]

FIXED_DATE = datetime(2025, 5, 12, 9, 30, 0, tzinfo=UTC)


# -- ICC profile ---------------------------------------------------------------------


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15f16(x) + _s15f16(y) + _s15f16(z)


def _text_description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    # textDescriptionType (ICC v2): ASCII, then empty Unicode and ScriptCode parts.
    return (
        b"desc\0\0\0\0"
        + struct.pack(">I", len(ascii_text))
        + ascii_text
        + struct.pack(">II", 0, 0)
        + struct.pack(">HB", 0, 0)
        + b"\0" * 67
    )


def srgb_icc_profile() -> bytes:
    """A minimal ICC v2 RGB display profile with sRGB primaries and a 2.2 gamma.

    Matrix/TRC profiles need exactly these tags (ICC.1:2001-04, 6.3.1.2): description,
    copyright, media white point, the three colourant XYZ and the three tone curves.
    Primaries are sRGB's, Bradford-adapted to the D50 PCS.
    """
    curve = b"curv\0\0\0\0" + struct.pack(">I", 1) + struct.pack(">H", 0x0233) + b"\0\0"
    tags: list[tuple[bytes, bytes]] = [
        (b"desc", _text_description("sidecar sRGB (gamma 2.2)")),
        (b"cprt", b"text\0\0\0\0" + b"No copyright, use freely\0"),
        (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz(0.4361, 0.2225, 0.0139)),
        (b"gXYZ", _xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", _xyz(0.1431, 0.0606, 0.7141)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table = struct.pack(">I", len(tags))
    data = b""
    offset = 128 + 4 + 12 * len(tags)
    positions: dict[bytes, tuple[int, int]] = {}
    for signature, body in tags:
        if body in [b for _, b in tags[: tags.index((signature, body))]]:
            # identical tone curves share one element, as most profiles do
            first = next(s for s, b in tags if b == body)
            positions[signature] = positions[first]
            continue
        positions[signature] = (offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    for signature, _ in tags:
        table += signature + struct.pack(">II", *positions[signature])
    size = 128 + len(table) + len(data)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"  # preferred CMM: none
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntr"
        + b"RGB "
        + b"XYZ "
        + struct.pack(">6H", 2025, 5, 12, 0, 0, 0)
        + b"acsp"
        + b"\0\0\0\0"  # primary platform
        + b"\0\0\0\0"  # flags
        + b"\0\0\0\0"  # device manufacturer
        + b"\0\0\0\0"  # device model
        + b"\0" * 8  # device attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + _s15f16(0.9642)
        + _s15f16(1.0)
        + _s15f16(0.8249)
        + b"\0\0\0\0"  # creator
    )
    header += b"\0" * (128 - len(header))
    return header + table + data


# -- PDF -----------------------------------------------------------------------------


def _pdf_string(text: str) -> bytes:
    """A literal PDF text string: PDFDocEncoding when Latin-1 suffices, else UTF-16BE."""
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raw = b"\xfe\xff" + text.encode("utf-16-be")
    escaped = raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    return b"(" + escaped + b")"


def _pdf_date(moment: datetime) -> str:
    return moment.strftime("D:%Y%m%d%H%M%S+00'00'")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _xmp(title: str, creator: str, producer: str, moment: datetime, part: int | None) -> bytes:
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    pdfaid = (
        f"<pdfaid:part>{part}</pdfaid:part>\n   <pdfaid:conformance>B</pdfaid:conformance>"
        if part is not None
        else ""
    )
    body = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:pdf="http://ns.adobe.com/pdf/1.3/">
   {pdfaid}
   <dc:format>application/pdf</dc:format>
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">{_xml_escape(title)}</rdf:li></rdf:Alt>
   </dc:title>
   <xmp:CreatorTool>{_xml_escape(creator)}</xmp:CreatorTool>
   <xmp:CreateDate>{stamp}</xmp:CreateDate>
   <xmp:ModifyDate>{stamp}</xmp:ModifyDate>
   <pdf:Producer>{_xml_escape(producer)}</pdf:Producer>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""
    # Padding lets an editor rewrite the packet in place (XMP spec part 1, 7.3.2).
    return (body + (" " * 99 + "\n") * 20 + '<?xpacket end="w"?>').encode("utf-8")


def _page_content(lines: Sequence[str], page_height: int) -> bytes:
    ops = [b"0 g", b"BT", b"/F1 18 Tf", b"20 TL", f"56 {page_height - 72} Td".encode()]
    for index, line in enumerate(lines):
        if index == 1:
            ops.append(b"/F1 11 Tf 15 TL")
        ops.append(b"<" + winansi_encode(line).hex().encode() + b"> Tj T*")
    ops.append(b"ET")
    return b"\n".join(ops) + b"\n"


def build_pdfa(
    pages: Sequence[Sequence[str]],
    *,
    title: str,
    creator: str = "sidecar make_samples.py",
    producer: str = "sidecar hand-built PDF/A-2b writer",
    moment: datetime = FIXED_DATE,
    padding: int = 0,
    version: str = "1.7",
    pdfa_part: int | None = 2,
) -> bytes:
    """A PDF/A-2b document, one page of text lines per item of *pages*.

    *padding* adds an uncompressed, unreferenced-from-content embedded stream of that
    many bytes (a page-piece dictionary), to make larger documents for benchmarks.
    *version* and *pdfa_part* make variants for the tests (PDF/A-1b is PDF 1.4;
    ``pdfa_part=None`` leaves the pdfaid identification out: not PDF/A).
    """
    font = TrueTypeFont.load()
    chars = {
        ch
        for page in pages
        for line in page
        for ch in line.encode("cp1252", "replace").decode("cp1252")
    }
    chars |= {"?"}
    font_dict, descriptor, program = font_objects(font, chars, "SDCRAA")
    width, height = 595, 842
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    def stream(extra: str, data: bytes, *, compress: bool = True) -> bytes:
        if compress:
            data = zlib.compress(data, 9)
            extra += " /Filter /FlateDecode"
        return f"<< /Length {len(data)}{extra} >>\nstream\n".encode() + data + b"\nendstream"

    def pdf_value(value: object) -> str:
        if isinstance(value, list):
            return "[" + " ".join(pdf_value(v) for v in value) + "]"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    catalog = add(b"")  # filled at the end, once the other numbers are known
    pages_obj = add(b"")
    font_file = add(stream(f" /Length1 {len(program)}", program))
    descriptor["/FontFile2"] = f"{font_file} 0 R"
    descriptor_obj = add(
        ("<< " + " ".join(f"{k} {pdf_value(v)}" for k, v in descriptor.items()) + " >>").encode()
    )
    font_dict["/FontDescriptor"] = f"{descriptor_obj} 0 R"
    font_obj = add(
        ("<< " + " ".join(f"{k} {pdf_value(v)}" for k, v in font_dict.items()) + " >>").encode()
    )
    icc = srgb_icc_profile()
    icc_obj = add(stream(" /N 3", icc))
    intent = add(
        f"<< /Type /OutputIntent /S /GTS_PDFA1 /OutputConditionIdentifier (sRGB) "
        f"/Info (sRGB IEC61966-2.1) /DestOutputProfile {icc_obj} 0 R >>".encode()
    )
    page_ids = []
    for lines in pages:
        content = add(stream("", _page_content(lines, height)))
        page = add(
            f"<< /Type /Page /Parent {pages_obj} 0 R /MediaBox [0 0 {width} {height}] "
            f"/Resources << /Font << /F1 {font_obj} 0 R >> >> /Contents {content} 0 R >>".encode()
        )
        page_ids.append(page)
    metadata = add(
        stream(
            " /Type /Metadata /Subtype /XML",
            _xmp(title, creator, producer, moment, pdfa_part),
            compress=False,
        )
    )
    piece = ""
    if padding:
        filler = add(stream(" /Type /EmbeddedData", b"%" * padding, compress=False))
        piece = (
            f" /PieceInfo << /sidecar << /LastModified ({_pdf_date(moment)}) "
            f"/Private {filler} 0 R >> >>"
        )
    objects[pages_obj - 1] = (
        f"<< /Type /Pages /Kids [{' '.join(f'{p} 0 R' for p in page_ids)}] "
        f"/Count {len(page_ids)} >>"
    ).encode()
    objects[catalog - 1] = (
        f"<< /Type /Catalog /Pages {pages_obj} 0 R /Metadata {metadata} 0 R "
        f"/OutputIntents [{intent} 0 R]{piece} >>"
    ).encode()
    info = add(
        b"<< /Title "
        + _pdf_string(title)
        + b" /Creator "
        + _pdf_string(creator)
        + b" /Producer "
        + _pdf_string(producer)
        + f" /CreationDate ({_pdf_date(moment)}) /ModDate ({_pdf_date(moment)}) >>".encode()
    )

    out = bytearray(f"%PDF-{version}\n".encode() + b"%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    file_id = hashlib.md5(title.encode() + bytes(out[:64]), usedforsecurity=False).hexdigest()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root {catalog} 0 R /Info {info} 0 R "
        f"/ID [<{file_id}> <{file_id}>] >>\nstartxref\n{xref}\n%%EOF\n"
    ).encode()
    return bytes(out)


FEE_NOTE_LINES = [
    "Mémoire d'honoraires — exemple (sandbox)",
    "",
    "Médecin : Dr Anne Muller — code 123456-78",
    "Patient : Jean Schmit — matricule 1980010112345",
    "Date d'émission : 12/05/2025",
    "",
    "12/05/2025   C1   Consultation du médecin généraliste     1 \u00d7   52,10 €",
    "12/05/2025   E1   Électrocardiogramme                      1 \u00d7   31,75 €",
    "",
    "Total : 83,85 €",
    "",
    "Document d'exemple de sidecar : format de remplacement, pas celui de la CNS.",
]


def main() -> None:
    pdf = build_pdfa([FEE_NOTE_LINES], title="Mémoire d'honoraires — exemple")
    (HERE / "fee-note.pdf").write_bytes(pdf)
    print(f"fee-note.pdf: {len(pdf)} bytes")


if __name__ == "__main__":
    main()
