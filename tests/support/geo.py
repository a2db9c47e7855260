"""Small MaxMind databases for tests, written with mmdb-writer and read back with maxminddb.

The records have the layout of MaxMind's GeoLite2 Country and ASN databases
(``country.iso_code``, ``registered_country.iso_code``,
``autonomous_system_number``, ``autonomous_system_organization``), so the
code under test reads them exactly as it reads the real ones.

``python -m tests.support.geo DIR`` writes the databases the bad-policy files
of tests/config/ refer to (tests/config/geo/).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

#: the networks most tests use: documentation ranges, and one real-looking address per country
COUNTRIES: dict[str, str] = {
    "81.2.69.0/24": "GB",
    "203.0.113.0/24": "KP",
    "198.51.100.0/24": "DE",
    "192.0.2.0/25": "FR",
    "2001:db8:de::/48": "DE",
    "2001:db8:ee::/48": "KP",
}
ASNS: dict[str, tuple[int, str]] = {
    "81.2.69.0/24": (64500, "EXAMPLE-TRANSIT"),
    "203.0.113.0/24": (64501, "EXAMPLE-CLOUD"),
    "198.51.100.0/24": (64502, "EXAMPLE-ISP"),
    "2001:db8:de::/48": (64502, "EXAMPLE-ISP"),
}


def _write(writer: MMDBWriter, path: str | os.PathLike[str]) -> Path:
    """Write atomically (a temporary file renamed over the target), as a database updater does."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".mmdb-", suffix=".tmp")
    os.close(fd)
    writer.to_db_file(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)
    return target


def _writer(database_type: str, nets: list[str]) -> MMDBWriter:
    v6 = any(":" in n for n in nets)
    if v6:
        return MMDBWriter(ip_version=6, ipv4_compatible=True, database_type=database_type, languages=["en"], description="authz tests")
    return MMDBWriter(ip_version=4, database_type=database_type, languages=["en"], description="authz tests")


def country_record(code: str, *, registered_only: bool = False) -> dict[str, Any]:
    part = {"iso_code": code, "geoname_id": 1, "names": {"en": f"country {code}"}}
    if registered_only:
        return {"registered_country": part, "continent": {"code": "EU"}}
    return {"country": part, "registered_country": part, "continent": {"code": "EU"}}


def write_country_db(
    path: str | os.PathLike[str],
    networks: Mapping[str, str | dict[str, Any]] = COUNTRIES,
    database_type: str = "GeoLite2-Country",
) -> Path:
    """A Country database: CIDR -> country code (or a whole record)."""
    writer = _writer(database_type, list(networks))
    for net, value in networks.items():
        writer.insert_network(IPSet([net]), country_record(value) if isinstance(value, str) else value)
    return _write(writer, path)


def write_asn_db(
    path: str | os.PathLike[str],
    networks: Mapping[str, tuple[int, str]] = ASNS,
    database_type: str = "GeoLite2-ASN",
) -> Path:
    """An ASN database: CIDR -> (AS number, organization)."""
    writer = _writer(database_type, list(networks))
    for net, (asn, org) in networks.items():
        writer.insert_network(IPSet([net]), {"autonomous_system_number": asn, "autonomous_system_organization": org})
    return _write(writer, path)


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "tests/config/geo")
    out.mkdir(parents=True, exist_ok=True)
    write_country_db(out / "country.mmdb")
    write_asn_db(out / "asn.mmdb")
    (out / "corrupt.mmdb").write_bytes(b"this is not a MaxMind database\n" * 64)


if __name__ == "__main__":
    main(sys.argv[1:])
