"""What later revisions of a PDF changed in what its pages show (shadow attacks).

A signature covers the revision it was made in; later incremental updates are
judged by pyHanko's difference analysis, which accepts "form filling" and new
annotations when the signature allows them. The shadow attacks (Mainka, Mladenov,
Rohlmann 2021: *hide*, *replace*, *hide-and-replace*) live exactly there: content
prepared before signing and switched on, swapped or uncovered by an update that is
formally allowed. Like EU DSS's "visual difference" and "object modification"
findings, :func:`changes_after` lists what each later revision touched — pages,
their content streams and XObjects, annotations and their appearance streams — so
that a report never calls such a document merely "intact".

It compares the signed revision with the newest one through pyHanko's historical
resolvers: objects are identified by reference, and a reference rewritten by a
later revision's xref section counts as changed even when it still has the same
number.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.pdf_utils.rw_common import PdfHandler

__all__ = ["changes_after"]

#: Pages walked at most (a page tree is walked per revision compared).
_MAX_PAGES = 5000
#: Findings listed at most per kind (the count is always given).
_MAX_LISTED = 20


def _ref(value: object) -> generic.Reference | None:
    if isinstance(value, generic.IndirectObject):
        return value.reference
    return None


def _pages(handler: PdfHandler) -> list[generic.DictionaryObject]:
    """The page dictionaries, in order (cycles and oversized trees cut short)."""
    found: list[generic.DictionaryObject] = []
    seen: set[generic.Reference] = set()

    def walk(node_value: object, depth: int) -> None:
        ref = _ref(node_value)
        if ref is not None:
            if ref in seen:
                return
            seen.add(ref)
        node = node_value.get_object() if hasattr(node_value, "get_object") else node_value
        if not isinstance(node, generic.DictionaryObject) or depth > 64:
            return
        if len(found) >= _MAX_PAGES:
            return
        kids = node.get("/Kids")
        if kids is None or node.get("/Type") == "/Page":
            found.append(node)
            return
        kids = kids.get_object() if hasattr(kids, "get_object") else kids
        if isinstance(kids, generic.ArrayObject):
            for kid in kids:
                walk(kid, depth + 1)

    walk(handler.root.raw_get("/Pages"), 0)
    return found


def _stream_refs(value: object) -> list[generic.Reference]:
    """References of a /Contents entry (a stream or an array of streams)."""
    ref = _ref(value)
    target = value.get_object() if hasattr(value, "get_object") else value
    if isinstance(target, generic.ArrayObject):
        return [r for r in (_ref(item) for item in target) if r is not None]
    return [ref] if ref is not None else []


def _raw(mapping: generic.DictionaryObject, key: str) -> object:
    try:
        return mapping.raw_get(key)
    except KeyError:
        return None


def _dict(value: object) -> generic.DictionaryObject | None:
    target = value.get_object() if hasattr(value, "get_object") else value
    return target if isinstance(target, generic.DictionaryObject) else None


def _xobjects(page: generic.DictionaryObject) -> dict[str, generic.Reference]:
    resources = _dict(_raw(page, "/Resources"))
    xobjects = _dict(_raw(resources, "/XObject")) if resources is not None else None
    if xobjects is None:
        return {}
    return {str(k): r for k, v in xobjects.items() if (r := _ref(xobjects.raw_get(k)))}


def _annotations(page: generic.DictionaryObject) -> list[tuple[object, generic.DictionaryObject]]:
    annots = _raw(page, "/Annots")
    array = annots.get_object() if hasattr(annots, "get_object") else annots
    if not isinstance(array, generic.ArrayObject):
        return []
    found: list[tuple[object, generic.DictionaryObject]] = []
    for item in array:
        annot = _dict(item)
        if annot is not None:
            found.append((_ref(item) or id(annot), annot))
    return found


def _appearance_refs(annot: generic.DictionaryObject) -> set[generic.Reference]:
    """The appearance streams of an annotation (/AP entries, state dictionaries too)."""
    found: set[generic.Reference] = set()
    ap = _dict(_raw(annot, "/AP"))
    if ap is None:
        return found
    for key in ("/N", "/R", "/D"):
        entry = _raw(ap, key)
        ref = _ref(entry)
        if ref is not None:
            found.add(ref)
        states = _dict(entry)
        if states is not None and not isinstance(states, generic.StreamObject):
            found.update(r for k in states if (r := _ref(states.raw_get(k))))
    return found


def _is_signature_widget(annot: generic.DictionaryObject) -> bool:
    node: generic.DictionaryObject | None = annot
    for _ in range(32):
        if node is None:
            return False
        if node.get("/FT") == "/Sig":
            return True
        node = _dict(_raw(node, "/Parent"))
    return False


def _field_name(annot: generic.DictionaryObject) -> str | None:
    node: generic.DictionaryObject | None = annot
    parts = []
    for _ in range(32):
        if node is None:
            break
        if "/T" in node:
            parts.append(str(node["/T"]))
        node = _dict(_raw(node, "/Parent"))
    return ".".join(reversed(parts)) or None


def _describe(page_no: int, annot: generic.DictionaryObject) -> dict[str, Any]:
    return {
        "page": page_no,
        "subtype": str(annot.get("/Subtype", "")),
        "field": _field_name(annot),
        "signature": _is_signature_widget(annot),
    }


def _rewritten(reader: PdfFileReader, revision: int) -> tuple[set[generic.Reference], int]:
    """References written again by any revision after *revision*, and how many revisions."""
    later = range(revision + 1, reader.xrefs.total_revisions)
    refs: set[generic.Reference] = set()
    for number in later:
        refs.update(reader.xrefs.explicit_refs_in_revision(number))
    return refs, len(later)


def _listed(items: list[Any]) -> list[Any]:
    return items[:_MAX_LISTED]


def changes_after(reader: PdfFileReader, revision: int) -> dict[str, Any]:
    """What the revisions after *revision* (0-based) changed in what the pages show.

    ``{"revisions", "pages", "content_streams", "xobjects", "annotations_added",
    "annotations_modified", "annotations_removed", "visible"}``; ``visible`` is
    whether anything but a signature's own widget changed the rendering.
    """
    rewritten, revisions = _rewritten(reader, revision)
    result: dict[str, Any] = {
        "revisions": revisions,
        "pages": [],
        "content_streams": [],
        "xobjects": [],
        "annotations_added": [],
        "annotations_modified": [],
        "annotations_removed": [],
        "visible": False,
    }
    if not revisions:
        return result
    before_pages = _pages(reader.get_historical_resolver(revision))
    after_pages = _pages(reader)
    pages_touched: set[int] = set()
    if len(before_pages) != len(after_pages):
        result["page_count"] = {"before": len(before_pages), "after": len(after_pages)}
        result["visible"] = True
    for index, (old, new) in enumerate(zip(before_pages, after_pages, strict=False)):
        page_no = index + 1
        for finding in _page_changes(page_no, old, new, rewritten):
            kind, value, visible = finding
            result[kind].append(value)
            pages_touched.add(page_no)
            result["visible"] = result["visible"] or visible
    result["pages"] = sorted(pages_touched)
    for key in ("content_streams", "xobjects", "annotations_added", "annotations_modified"):
        result[f"{key}_count"] = len(result[key])
        result[key] = _listed(result[key])
    result["annotations_removed_count"] = len(result["annotations_removed"])
    result["annotations_removed"] = _listed(result["annotations_removed"])
    return result


def _page_changes(
    page_no: int,
    old: generic.DictionaryObject,
    new: generic.DictionaryObject,
    rewritten: set[generic.Reference],
) -> Iterator[tuple[str, Any, bool]]:
    """(kind, finding, visible) for one page."""
    old_contents = _stream_refs(_raw(old, "/Contents"))
    new_contents = _stream_refs(_raw(new, "/Contents"))
    for ref in new_contents:
        if ref not in old_contents or ref in rewritten:
            yield (
                "content_streams",
                {"page": page_no, "object": f"{ref.idnum} {ref.generation} R"},
                True,
            )
    if len(new_contents) < len(old_contents):
        yield (
            "content_streams",
            {"page": page_no, "removed": len(old_contents) - len(new_contents)},
            True,
        )
    old_x, new_x = _xobjects(old), _xobjects(new)
    for name, ref in new_x.items():
        if old_x.get(name) != ref or ref in rewritten:
            yield (
                "xobjects",
                {"page": page_no, "name": name, "object": f"{ref.idnum} {ref.generation} R"},
                True,
            )
    old_annots = dict(_annotations(old))
    new_annots = _annotations(new)
    for key, annot in new_annots:
        described = _describe(page_no, annot)
        visible = not described["signature"] and "/AP" in annot
        if key not in old_annots:
            yield "annotations_added", described, visible
            continue
        appearance_changed = bool(_appearance_refs(annot) & rewritten) or (
            _appearance_refs(annot) != _appearance_refs(old_annots[key])
        )
        if appearance_changed or (isinstance(key, generic.Reference) and key in rewritten):
            described["appearance_changed"] = appearance_changed
            yield (
                "annotations_modified",
                described,
                appearance_changed and not described["signature"],
            )
    new_keys = {key for key, _ in new_annots}
    for key, annot in old_annots.items():
        if key not in new_keys:
            yield "annotations_removed", _describe(page_no, annot), True
