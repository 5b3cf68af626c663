"""The fence around pyHanko's trusted-list internals (its ``etsi`` extra).

Apart from :mod:`.pyhanko_hooks` so that signing never imports the ``etsi`` extra
(xsdata models, a second or so of start-up); used by :mod:`sidecar.trust.lists`.

pyHanko's public ``trust_list_to_registry`` checks a list's XML signature at the
current time, so a list signed by a TLSO certificate that has since expired (every
archived list, and a cached one after a certificate roll-over) cannot be read; and it
exposes neither a list's ``NextUpdate`` nor the status history of the services it does
not register. Both are reached here, and only here, through two private functions:

- ``eutl_parse._validate_and_extract_tl_data_multiple_certs`` (signature check at a
  chosen time, returning the signed content);
- ``eutl_parse._raw_tl_parse`` (pyHanko's xsdata model of ETSI TS 119 612), which we
  only ever apply to content whose signature has been verified (it parses in lxml's
  recover mode).

``tests/test_trust_lists.py`` has a test that fails if an upgrade removes or changes
them; the version is pinned in ``pyproject.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from asn1crypto import x509
from pyhanko.sign.validation.qualified import eutl_parse

__all__ = ["RawHeader", "RawService", "read_header", "read_services", "verified_content"]


def verified_content(xml: str, signers: list[x509.Certificate], at: datetime) -> str:
    """The signed ``TrustServiceStatusList`` of *xml*, its signature checked at *at*
    against one of *signers*. Raises pyHanko's ``SignatureValidationError`` or lxml's
    ``XMLSyntaxError``."""
    return eutl_parse._validate_and_extract_tl_data_multiple_certs(xml, signers, at)


@dataclass(frozen=True)
class RawHeader:
    """The scheme information that says which list this is and until when it holds."""

    territory: str | None
    sequence: int | None
    issued: datetime | None
    next_update: datetime | None


def read_header(signed_xml: str) -> RawHeader:
    """``SchemeInformation`` of a list whose signature was verified."""
    info = eutl_parse._raw_tl_parse(signed_xml).scheme_information
    if info is None:
        return RawHeader(None, None, None, None)
    issued = info.list_issue_date_time.to_datetime() if info.list_issue_date_time else None
    next_update = None
    if info.next_update is not None and info.next_update.date_time is not None:
        next_update = info.next_update.date_time.to_datetime()
    territory = info.scheme_territory
    return RawHeader(
        territory=_uri(territory) or None,
        sequence=int(info.tslsequence_number) if info.tslsequence_number is not None else None,
        issued=issued,
        next_update=next_update,
    )


@dataclass(frozen=True)
class RawService:
    """One service of a list with its status history, newest first."""

    provider: str
    name: str
    service_type: str
    #: ``(status URI, since)``: the current status first, then the history.
    statuses: tuple[tuple[str, datetime | None], ...]


def _name(names: object) -> str:
    for item in getattr(names, "name", None) or ():
        if getattr(item, "lang", None) in ("en", None):
            return str(item.value)
    for item in getattr(names, "name", None) or ():
        return str(item.value)
    return ""


def _uri(value: object) -> str:
    return str(getattr(value, "value", value) or "")


def _when(value: object) -> datetime | None:
    return value.to_datetime() if value is not None else None  # type: ignore[attr-defined]


def read_services(signed_xml: str) -> list[RawService]:
    """Every service of every TSP of a list whose signature was verified."""
    tsl = eutl_parse._raw_tl_parse(signed_xml)
    found: list[RawService] = []
    providers = tsl.trust_service_provider_list
    for tsp in providers.trust_service_provider if providers else ():
        provider = _name(tsp.tspinformation.tspname) if tsp.tspinformation else ""
        for service in tsp.tspservices.tspservice if tsp.tspservices else ():
            info = service.service_information
            if info is None:
                continue
            statuses = [(_uri(info.service_status), _when(info.status_starting_time))]
            history = service.service_history
            for item in history.service_history_instance if history else ():
                statuses.append((_uri(item.service_status), _when(item.status_starting_time)))
            found.append(
                RawService(
                    provider=provider,
                    name=_name(info.service_name),
                    service_type=_uri(info.service_type_identifier),
                    statuses=tuple(statuses),
                )
            )
    return found
