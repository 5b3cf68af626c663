"""The EU trusted lists: real, published lists (tests/data/trusted-lists, SOURCES.md).

The LOTL (sequence 248, 2019-09-04) and the Luxembourg list it points to (sequence 37,
2019-08-07) are judged as on 2019-09-05, when both were current: their signatures
verify against the LOTL signers of the Official Journal and the certificates the LOTL
designates for LU; LuxTrust's CA/QC and TSA/QTST services come out with their status
histories. A list with a broken signature, an unparseable one and a stale one are each
handled per the rules of :mod:`sidecar.trust.lists.source`. Nothing here uses the network.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyhanko.sign.validation.qualified import eutl_parse

from sidecar._hooks import pyhanko_eutl_hooks as fenced
from sidecar.trust.anchors import TrustAnchors
from sidecar.trust.lists import (
    LOTL_KEY,
    ListCache,
    ListPolicy,
    qualify_timestamp,
    read_lists,
)
from sidecar.trust.service import with_list_anchors

DATA = Path(__file__).parent / "data" / "trusted-lists"
LOTL_URL = "https://ec.europa.eu/tools/lotl/eu-lotl.xml"
LU_URL = (
    "https://portail-qualite.public.lu/content/dam/qualite/fr/publications/"
    "confiance-numerique/liste-confiance-nationale/tsl-xml/tsl.xml"
)
#: Both lists current (LU's NextUpdate is 2020-02-07, the LOTL's 2020-03-04).
WHEN = datetime(2019, 9, 5, tzinfo=UTC)
GRANTED = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/granted"
WITHDRAWN = "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/withdrawn"
QTST = "http://uri.etsi.org/TrstSvc/Svctype/TSA/QTST"
CA_QC = "http://uri.etsi.org/TrstSvc/Svctype/CA/QC"
#: The 2019 LOTL is signed with certificates of the first Official Journal anchor.
POLICY = ListPolicy(
    lotl_url=LOTL_URL, lotl_signers=tuple(eutl_parse.ojeu_bootstrap_lotl_tlso_certs(0))
)


def _text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any socket opened while the lists are read fails the test."""

    def refuse(*args: object, **kwargs: object) -> socket.socket:
        raise AssertionError("the trusted lists opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def _cache(
    tmp_path: Path, lotl: str = "eu-lotl-248.xml", lu: str | None = "lu-tl-37.xml"
) -> ListCache:
    cache = ListCache(tmp_path / "lists")
    cache.put(LOTL_KEY, LOTL_URL, WHEN, _text(lotl))
    if lu is not None:
        cache.put("LU", LU_URL, WHEN, _text(lu) if lu.endswith(".xml") else lu)
    return cache


def test_real_lists_verify_and_luxtrust_services_come_out(tmp_path: Path, no_network: None) -> None:
    lists = read_lists(_cache(tmp_path), POLICY, WHEN)

    assert lists.problems == ()
    by_key = {i.key: i for i in lists.lists}
    assert by_key["EU"].sequence == 248 and by_key["EU"].state == "current"
    lu = by_key["LU"]
    assert (lu.sequence, lu.state) == (37, "current")
    assert lu.issued == datetime(2019, 8, 7, 1, 0, tzinfo=UTC)
    assert lu.next_update == datetime(2020, 2, 7, tzinfo=UTC)

    services = {
        (s.name, s.service_type): s for s in lists.services if s.provider == "LuxTrust S.A."
    }
    ca3 = services["LuxTrust Global Qualified Certification Authority 3", CA_QC]
    assert [s for s, _ in ca3.statuses] == [
        GRANTED,
        GRANTED,
        "http://uri.etsi.org/TrstSvc/TrustedList/Svcstatus/undersupervision",
    ]
    assert ca3.statuses[0][1] == datetime(2018, 4, 6, 13, 0, tzinfo=UTC)
    qts = services["LuxTrust Qualified Time Stamping", QTST]
    assert qts.statuses == ((GRANTED, datetime(2017, 2, 17, tzinfo=UTC)),)
    # Granted on 2016-11-30, withdrawn on 2017-02-17.
    old_tsa = services["LuxTrust Global Time Stamping Authority", QTST]
    assert old_tsa.statuses == (
        (WITHDRAWN, datetime(2017, 2, 17, tzinfo=UTC)),
        (GRANTED, datetime(2016, 11, 30, tzinfo=UTC)),
    )

    # The CA/QC services granted on that day become anchors for signer chains...
    ca_names = {c.subject.native["common_name"] for c in lists.ca_certificates(WHEN)}
    assert {"LuxTrust Global Qualified CA 3", "LuxTrust Global Root 2"} & ca_names
    assert "LuxTrust Qualified CA" not in ca_names  # withdrawn in 2017
    # ...and the QTST's digital identity an anchor for timestamps.
    assert lists.tsa_certificates(WHEN)


def test_qtst_granted_only_while_its_status_was_granted(tmp_path: Path) -> None:
    lists = read_lists(_cache(tmp_path), POLICY, WHEN)
    # "LuxTrust Qualified Time Stamping": granted since 2017-02-17; its digital identity
    # is the certificate of the CA that issues LuxTrust's TSA certificates.
    (identity,) = lists.tsa_certificates(WHEN)
    assert identity.subject.native["common_name"] == "LuxTrust Global Qualified CA 3"
    during = qualify_timestamp(lists, [identity], datetime(2018, 1, 10, tzinfo=UTC))
    assert (during.qualified, during.service) == (True, "LuxTrust Qualified Time Stamping")
    before = qualify_timestamp(lists, [identity], datetime(2017, 1, 10, tzinfo=UTC))
    assert before.qualified is False
    # A timestamp with no listed certificate on its chain is not qualified.
    assert (
        qualify_timestamp(lists, eutl_parse.ojeu_bootstrap_lotl_tlso_certs(0), WHEN).qualified
        is False
    )


def test_lotl_with_a_broken_signature_is_not_used(tmp_path: Path) -> None:
    lists = read_lists(_cache(tmp_path, lotl="eu-lotl-248-broken-sig.xml"), POLICY, WHEN)
    assert not lists.usable
    assert lists.lists[0].state == "refused"
    assert "XML signature does not verify" in lists.problems[0]
    assert not lists.ca_certificates(WHEN)


def test_member_list_with_a_broken_signature_is_not_used(tmp_path: Path) -> None:
    # One service renamed after signing: the signature no longer covers the content.
    tampered = _text("lu-tl-37.xml").replace(
        "LuxTrust Qualified Time Stamping", "LuxTrust Qualified Time Stamping!", 1
    )
    lists = read_lists(_cache(tmp_path, lu=tampered), POLICY, WHEN)
    assert not lists.usable
    lu = next(i for i in lists.lists if i.key == "LU")
    assert lu.state == "refused" and "XML signature does not verify" in (lu.problem or "")
    assert not lists.tsa_certificates(WHEN)


def test_unparseable_list_is_not_used(tmp_path: Path) -> None:
    lists = read_lists(_cache(tmp_path, lotl="eu-lotl-248-not-parsable.xml"), POLICY, WHEN)
    assert not lists.usable
    assert "not well-formed XML" in lists.problems[0]


def test_stale_list_warns_then_is_refused(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    # A day past LU's NextUpdate (2020-02-07): used, with a warning.
    lists = read_lists(cache, POLICY, datetime(2020, 2, 8, tzinfo=UTC))
    lu = next(i for i in lists.lists if i.key == "LU")
    assert lu.state == "stale" and lists.usable
    assert any("LU is past its NextUpdate" in p for p in lists.problems)
    # Past the grace (7 days by default): refused.
    lists = read_lists(cache, POLICY, datetime(2020, 2, 20, tzinfo=UTC))
    lu = next(i for i in lists.lists if i.key == "LU")
    assert lu.state == "refused" and not lists.usable
    assert not lists.ca_certificates(datetime(2020, 2, 20, tzinfo=UTC))
    # stale_grace = 0: refused the moment it is stale.
    strict = ListPolicy(lotl_url=LOTL_URL, lotl_signers=POLICY.lotl_signers, stale_grace=0)
    assert not read_lists(cache, strict, datetime(2020, 2, 7, 1, tzinfo=UTC)).usable


def test_damaged_cache_file_is_not_read(tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    path = cache.directory / "LU.xml"
    path.write_bytes(path.read_bytes()[:-10])
    lists = read_lists(cache, POLICY, WHEN)
    assert not lists.usable and any("LU" in p for p in lists.problems)


def test_empty_cache_says_to_refresh(tmp_path: Path) -> None:
    lists = read_lists(ListCache(tmp_path / "none"), POLICY, WHEN)
    assert not lists.usable and "sidecar trust refresh" in lists.problems[0]


def test_pyhanko_private_hooks_still_there() -> None:
    """The fence: fails when a pyHanko upgrade removes or changes what _pyhanko uses."""
    signers = eutl_parse.ojeu_bootstrap_lotl_tlso_certs(0)
    signed = fenced.verified_content(_text("eu-lotl-248.xml"), signers, WHEN)
    header = fenced.read_header(signed)
    assert (header.territory, header.sequence) == ("EU", 248)
    assert header.next_update == datetime(2020, 3, 4, tzinfo=UTC)
    assert eutl_parse.parse_lotl_unsafe(signed).references
    assert not fenced.read_services(signed)  # a LOTL has no TSP
    assert timedelta(0) < header.next_update - header.issued  # type: ignore[operator]


def test_with_no_configured_root_every_listed_ca_is_an_anchor(tmp_path: Path) -> None:
    lists = read_lists(_cache(tmp_path), POLICY, WHEN)
    listed = lists.ca_certificates(WHEN) + lists.tsa_certificates(WHEN)
    anchors = with_list_anchors(TrustAnchors.of([]), lists, WHEN)
    assert {c.sha256 for c in anchors.certificates} == {c.sha256 for c in listed}
    names = {c.subject.native["common_name"] for c in anchors.certificates}
    assert "LuxTrust Global Qualified CA 3" in names
