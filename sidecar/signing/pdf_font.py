"""An embedded TrueType font for the PDFs sidecar writes (samples, visible stamps).

PDF/A forbids fonts that are not embedded, and pyHanko's own embedding needs
fontTools, which the daemon does without. This module embeds a TrueType font as
a *simple* font (``/WinAnsiEncoding``, one byte per character): the glyph
outlines not used are emptied (glyph ids stay the same, so ``hmtx`` and the
composite glyphs need no renumbering), the layout tables are dropped, and a
small Microsoft Unicode ``cmap`` (3,1) — which PDF/A asks of non-symbolic
TrueType fonts — is rebuilt for the characters used. ``/Widths`` come from the
font's own ``hmtx``, so that they agree with the program as PDF/A requires.

Characters outside WinAnsi are shown as ``?``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.font.api import FontEngine, FontEngineFactory, ShapeResult
from pyhanko.pdf_utils.writer import BasePdfFileWriter

__all__ = [
    "DEFAULT_FONT",
    "EmbeddedTrueTypeFactory",
    "TrueTypeFont",
    "font_objects",
    "winansi_encode",
]

#: DejaVu Sans (Bitstream Vera licence: embedding and redistribution allowed),
#: shipped by Debian's fonts-dejavu-core.
DEFAULT_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Tables a PDF consumer may use from an embedded TrueType program; the rest
# (GPOS, GSUB, kern...) only serve text layout, which PDF does itself.
_KEPT_TABLES = (b"OS/2", b"cvt ", b"fpgm", b"head", b"hhea", b"hmtx", b"maxp", b"name", b"prep")

# WinAnsiEncoding 0x80-0x9F (cp1252); 0xA0-0xFF are Latin-1.
_CP1252_HIGH = "".join(
    bytes([code]).decode("cp1252") if code not in (0x81, 0x8D, 0x8F, 0x90, 0x9D) else chr(code)
    for code in range(0x80, 0xA0)
)


def winansi_encode(text: str) -> bytes:
    """*text* as WinAnsiEncoding bytes; what it cannot encode becomes ``?``."""
    out = bytearray()
    for char in text:
        code = ord(char)
        if 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF:
            out.append(code)
        elif char in _CP1252_HIGH and code > 0xFF:
            out.append(0x80 + _CP1252_HIGH.index(char))
        else:
            out.append(0x3F)
    return bytes(out)


def _winansi_char(code: int) -> str:
    return _CP1252_HIGH[code - 0x80] if 0x80 <= code <= 0x9F else chr(code)


def _checksum(data: bytes) -> int:
    padded = data + b"\0" * (-len(data) % 4)
    return sum(struct.unpack(f">{len(padded) // 4}I", padded)) & 0xFFFFFFFF


@dataclass(frozen=True)
class _Metrics:
    units_per_em: int
    bbox: tuple[int, int, int, int]
    ascent: int
    descent: int
    cap_height: int
    italic_angle: float
    postscript_name: str


class TrueTypeFont:
    """A parsed TrueType font file: metrics, character map, and subsetting."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        (count,) = struct.unpack(">H", data[4:6])
        self.tables: dict[bytes, bytes] = {}
        for i in range(count):
            tag, _, offset, length = struct.unpack(">4sIII", data[12 + 16 * i : 28 + 16 * i])
            self.tables[tag] = data[offset : offset + length]
        head = self.tables[b"head"]
        self._units = struct.unpack(">H", head[18:20])[0]
        self._long_loca = struct.unpack(">h", head[50:52])[0] == 1
        (self._num_glyphs,) = struct.unpack(">H", self.tables[b"maxp"][4:6])
        (self._num_hmetrics,) = struct.unpack(">H", self.tables[b"hhea"][34:36])
        self._cmap = self._read_cmap()
        self.metrics = self._read_metrics()

    @classmethod
    @cache
    def load(cls, path: Path = DEFAULT_FONT) -> TrueTypeFont:
        return cls(path.read_bytes())

    # -- reading -------------------------------------------------------------

    def _read_cmap(self) -> dict[int, int]:
        cmap = self.tables[b"cmap"]
        (count,) = struct.unpack(">H", cmap[2:4])
        for i in range(count):
            platform, encoding, offset = struct.unpack(">HHI", cmap[4 + 8 * i : 12 + 8 * i])
            if (platform, encoding) == (3, 1) and struct.unpack(">H", cmap[offset : offset + 2])[
                0
            ] == 4:
                return self._read_format4(cmap[offset:])
        raise ValueError("the font has no (3,1) format 4 character map")

    @staticmethod
    def _read_format4(table: bytes) -> dict[int, int]:
        segments = struct.unpack(">H", table[6:8])[0] // 2
        ends = struct.unpack(f">{segments}H", table[14 : 14 + 2 * segments])
        base = 16 + 2 * segments
        starts = struct.unpack(f">{segments}H", table[base : base + 2 * segments])
        deltas = struct.unpack(f">{segments}h", table[base + 2 * segments : base + 4 * segments])
        range_base = base + 4 * segments
        offsets = struct.unpack(f">{segments}H", table[range_base : range_base + 2 * segments])
        mapping: dict[int, int] = {}
        for seg in range(segments):
            for code in range(starts[seg], ends[seg] + 1):
                if code == 0xFFFF:
                    continue
                if offsets[seg] == 0:
                    glyph = (code + deltas[seg]) & 0xFFFF
                else:
                    where = range_base + 2 * seg + offsets[seg] + 2 * (code - starts[seg])
                    (glyph,) = struct.unpack(">H", table[where : where + 2])
                    if glyph:
                        glyph = (glyph + deltas[seg]) & 0xFFFF
                if glyph:
                    mapping[code] = glyph
        return mapping

    def _read_metrics(self) -> _Metrics:
        head = self.tables[b"head"]
        bbox = struct.unpack(">4h", head[36:44])
        os2 = self.tables[b"OS/2"]
        ascent, descent = struct.unpack(">hh", os2[68:72])
        version = struct.unpack(">H", os2[0:2])[0]
        cap_height = struct.unpack(">h", os2[88:90])[0] if version >= 2 else ascent
        post = self.tables[b"post"]
        italic = struct.unpack(">i", post[4:8])[0] / 65536
        return _Metrics(
            self._units,
            bbox,
            ascent,
            descent,
            cap_height,
            italic,
            self._postscript_name(),
        )

    def _postscript_name(self) -> str:
        name = self.tables[b"name"]
        count, string_offset = struct.unpack(">HH", name[2:6])
        for i in range(count):
            platform, encoding, _, name_id, length, offset = struct.unpack(
                ">6H", name[6 + 12 * i : 18 + 12 * i]
            )
            if name_id == 6:
                raw = name[string_offset + offset : string_offset + offset + length]
                if platform == 3:
                    return raw.decode("utf-16-be")
                if (platform, encoding) == (1, 0):
                    return raw.decode("latin-1")
        return "Font"

    def glyph_id(self, char: str) -> int:
        return self._cmap.get(ord(char), 0)

    def advance(self, glyph: int) -> int:
        """Advance width of *glyph* in font units."""
        index = min(glyph, self._num_hmetrics - 1)
        (width,) = struct.unpack(">H", self.tables[b"hmtx"][4 * index : 4 * index + 2])
        return width

    def width_1000(self, char: str) -> int:
        """Advance of *char* in the 1/1000 em units of PDF ``/Widths``."""
        return round(self.advance(self.glyph_id(char)) * 1000 / self._units)

    def _glyph_slices(self) -> list[tuple[int, int]]:
        loca = self.tables[b"loca"]
        n = self._num_glyphs + 1
        if self._long_loca:
            offsets = struct.unpack(f">{n}I", loca[: 4 * n])
        else:
            offsets = tuple(2 * o for o in struct.unpack(f">{n}H", loca[: 2 * n]))
        return [(offsets[i], offsets[i + 1]) for i in range(self._num_glyphs)]

    # -- subsetting ----------------------------------------------------------

    def subset(self, chars: Iterable[str]) -> bytes:
        """A font program keeping only the outlines of *chars* (and .notdef)."""
        chars = set(chars)
        glyf = self.tables[b"glyf"]
        slices = self._glyph_slices()
        keep = {0} | {self.glyph_id(c) for c in chars}
        pending = list(keep)
        while pending:  # composite glyphs pull in their components
            start, end = slices[pending.pop()]
            if end - start < 10 or struct.unpack(">h", glyf[start : start + 2])[0] >= 0:
                continue
            pos = start + 10
            while True:
                flags, component = struct.unpack(">HH", glyf[pos : pos + 4])
                if component not in keep:
                    keep.add(component)
                    pending.append(component)
                pos += 4 + (4 if flags & 0x0001 else 2)
                if flags & 0x0008:
                    pos += 2
                elif flags & 0x0040:
                    pos += 4
                elif flags & 0x0080:
                    pos += 8
                if not flags & 0x0020:
                    break
        new_glyf = bytearray()
        offsets = [0]
        for gid, (start, end) in enumerate(slices):
            if gid in keep:
                new_glyf += glyf[start:end]
                new_glyf += b"\0" * (-len(new_glyf) % 4)
            offsets.append(len(new_glyf))
        tables = {tag: self.tables[tag] for tag in _KEPT_TABLES if tag in self.tables}
        tables[b"glyf"] = bytes(new_glyf)
        tables[b"loca"] = struct.pack(f">{len(offsets)}I", *offsets)
        head = bytearray(tables[b"head"])
        head[8:12] = b"\0\0\0\0"  # checkSumAdjustment, set below
        head[50:52] = struct.pack(">h", 1)  # long loca offsets
        tables[b"head"] = bytes(head)
        tables[b"cmap"] = self._subset_cmap(chars)
        # post format 3: no glyph names (they would be most of the file).
        tables[b"post"] = b"\x00\x03\x00\x00" + self.tables[b"post"][4:32]
        return self._assemble(tables)

    def _subset_cmap(self, chars: set[str]) -> bytes:
        codes = sorted({ord(c) for c in chars if ord(c) < 0xFFFF and self.glyph_id(c)})
        segments = [(code, code, self._cmap[code]) for code in codes] + [(0xFFFF, 0xFFFF, 0)]
        count = len(segments)
        search = 2 ** (count.bit_length() - 1)
        ends = [s[1] for s in segments]
        starts = [s[0] for s in segments]
        deltas = [((glyph - start) & 0xFFFF) if glyph else 1 for start, _, glyph in segments]
        body = struct.pack(
            ">HHHH", 2 * count, 2 * search, search.bit_length() - 1, 2 * count - 2 * search
        )
        body += struct.pack(f">{count}H", *ends) + b"\0\0"
        body += struct.pack(f">{count}H", *starts)
        body += struct.pack(f">{count}H", *deltas)
        body += struct.pack(f">{count}H", *([0] * count))
        subtable = struct.pack(">HHH", 4, 6 + len(body), 0) + body
        return struct.pack(">HHHHI", 0, 1, 3, 1, 12) + subtable

    @staticmethod
    def _assemble(tables: dict[bytes, bytes]) -> bytes:
        tags = sorted(tables)
        count = len(tags)
        search = 2 ** (count.bit_length() - 1)
        header = struct.pack(
            ">IHHHH",
            0x00010000,
            count,
            16 * search,
            search.bit_length() - 1,
            16 * count - 16 * search,
        )
        directory = bytearray()
        body = bytearray()
        offset = 12 + 16 * count
        for tag in tags:
            data = tables[tag]
            directory += struct.pack(">4sIII", tag, _checksum(data), offset + len(body), len(data))
            body += data + b"\0" * (-len(data) % 4)
        font = bytearray(header + directory + body)
        adjustment = (0xB1B0AFBA - _checksum(bytes(font))) & 0xFFFFFFFF
        head_offset = (
            12
            + 16 * count
            + sum(len(tables[t]) + (-len(tables[t]) % 4) for t in tags[: tags.index(b"head")])
        )
        font[head_offset + 8 : head_offset + 12] = struct.pack(">I", adjustment)
        return bytes(font)


def font_objects(
    font: TrueTypeFont, chars: Iterable[str], subset_tag: str
) -> tuple[dict[str, object], dict[str, object], bytes]:
    """The font dictionary, descriptor (minus ``/FontFile2``) and program, as plain values.

    Callers turn them into objects of their PDF writer. Widths cover the WinAnsi
    codes 32-255 so that any character the encoder produces has its width.
    """
    chars = {c for c in chars}
    program = font.subset(chars)
    m = font.metrics
    scale = 1000 / m.units_per_em
    name = f"{subset_tag}+{m.postscript_name}"
    widths = [
        font.width_1000(_winansi_char(code)) if _winansi_char(code) in chars else 0
        for code in range(32, 256)
    ]
    descriptor = {
        "/Type": "/FontDescriptor",
        "/FontName": "/" + name,
        "/Flags": 32,  # non-symbolic
        "/FontBBox": [round(v * scale) for v in m.bbox],
        "/ItalicAngle": m.italic_angle,
        "/Ascent": round(m.ascent * scale),
        "/Descent": round(m.descent * scale),
        "/CapHeight": round(m.cap_height * scale),
        "/StemV": 80,
    }
    font_dict = {
        "/Type": "/Font",
        "/Subtype": "/TrueType",
        "/BaseFont": "/" + name,
        "/FirstChar": 32,
        "/LastChar": 255,
        "/Widths": widths,
        "/Encoding": "/WinAnsiEncoding",
    }
    return font_dict, descriptor, program


def _to_pdf(value: object) -> generic.PdfObject:
    if isinstance(value, bool):
        return generic.BooleanObject(value)
    if isinstance(value, int):
        return generic.NumberObject(value)
    if isinstance(value, float):
        return generic.FloatObject(value)
    if isinstance(value, str) and value.startswith("/"):
        return generic.NameObject(value)
    if isinstance(value, list):
        return generic.ArrayObject([_to_pdf(v) for v in value])
    raise TypeError(f"cannot convert {value!r}")


class _EmbeddedTrueTypeEngine(FontEngine):
    """pyHanko font engine: WinAnsi text in an embedded TrueType subset."""

    def __init__(self, writer: BasePdfFileWriter, font: TrueTypeFont) -> None:
        super().__init__(writer, font.metrics.postscript_name, embedded_subset=True)
        self.font = font
        self._used: set[str] = set()
        # Reserved now, filled in prepare_write once every string is known.
        self._ref = writer.add_object(generic.DictionaryObject())

    @property
    def uses_complex_positioning(self) -> bool:
        return False

    def shape(self, txt: str) -> ShapeResult:
        encoded = winansi_encode(txt)
        chars = [_winansi_char(b) for b in encoded]
        self._used.update(chars)
        advance = sum(self.font.width_1000(c) for c in chars) / 1000
        ops = b"<" + encoded.hex().encode("ascii") + b"> Tj"
        return ShapeResult(graphics_ops=ops, x_advance=advance, y_advance=0)

    def as_resource(self) -> generic.PdfObject:
        return self._ref

    def prepare_write(self) -> None:
        assert self.subset_prefix is not None
        font_dict, descriptor, program = font_objects(self.font, self._used, self.subset_prefix)
        stream = generic.StreamObject(
            {generic.NameObject("/Length1"): generic.NumberObject(len(program))},
            stream_data=program,
        )
        stream.compress()
        descriptor_obj = generic.DictionaryObject(
            {generic.NameObject(k): _to_pdf(v) for k, v in descriptor.items()}
        )
        descriptor_obj[generic.NameObject("/FontFile2")] = self.writer.add_object(stream)
        target = self._ref.get_object()
        assert isinstance(target, generic.DictionaryObject)
        target.update({generic.NameObject(k): _to_pdf(v) for k, v in font_dict.items()})
        target[generic.NameObject("/FontDescriptor")] = self.writer.add_object(descriptor_obj)


class EmbeddedTrueTypeFactory(FontEngineFactory):
    """Give to pyHanko's ``TextBoxStyle(font=...)`` for an embedded, PDF/A-safe stamp font."""

    def __init__(self, path: Path = DEFAULT_FONT) -> None:
        self.path = path

    def create_font_engine(
        self, writer: BasePdfFileWriter, obj_stream: object = None
    ) -> FontEngine:
        return _EmbeddedTrueTypeEngine(writer, TrueTypeFont.load(self.path))


def compress(data: bytes) -> bytes:
    return zlib.compress(data, 9)
