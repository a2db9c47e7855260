"""MaxMind databases built here with mmdb-writer, read by authz with maxminddb; AS number lists."""

from __future__ import annotations

from pathlib import Path

import maxminddb
import pytest

from authz.config.geoip import asn_of, country_of, load_asn_file, open_database
from authz.errors import ConfigError
from tests.support.geo import country_record, write_asn_db, write_country_db

CONFIG_GEO = Path(__file__).parent.parent / "config" / "geo"


@pytest.fixture(scope="module")
def dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("geo")
    return write_country_db(d / "country.mmdb"), write_asn_db(d / "asn.mmdb")


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("81.2.69.160", "GB"),
        ("203.0.113.9", "KP"),
        ("198.51.100.1", "DE"),
        ("192.0.2.1", "FR"),
        ("192.0.2.200", ""),  # outside the /25
        ("2001:db8:de::1", "DE"),  # IPv6
        ("2001:db8:ff::1", ""),
        ("10.0.0.1", ""),  # private: in no database
        ("127.0.0.1", ""),
        ("not-an-address", ""),  # never raises
        ("", ""),
    ],
)
def test_country_lookups(dbs: tuple[Path, Path], ip: str, country: str) -> None:
    db = open_database(str(dbs[0]), "country")
    assert db.country(ip) == country


def test_asn_lookups(dbs: tuple[Path, Path]) -> None:
    db = open_database(str(dbs[1]), "asn")
    assert db.asn("203.0.113.9") == 64501
    assert db.asn("2001:db8:de::5") == 64502
    assert db.asn("10.1.2.3") == 0
    assert db.asn("::1") == 0


def test_lookups_run_in_the_c_reader_over_a_private_copy(dbs: tuple[Path, Path]) -> None:
    """The C extension is installed here: lookups must use it (1 to 3 us, not 12 to 20)."""
    db = open_database(str(dbs[0]), "country")
    assert db.in_c and "C reader" in db.describe()
    assert db.database_type == "GeoLite2-Country"


def test_a_database_rewritten_in_place_does_not_change_a_loaded_one(tmp_path: Path) -> None:
    """The loaded copy is private: an operator's `cp` over the file cannot tear or truncate it."""
    path = write_country_db(tmp_path / "c.mmdb")
    db = open_database(str(path), "country")
    with open(path, "r+b") as f:  # in place: same inode, now empty, then garbage
        f.truncate(0)
        f.write(b"\0" * 100)
    assert db.country("81.2.69.160") == "GB"
    assert db.country("2001:db8:de::1") == "DE"


def test_an_ipv4_only_database_answers_ipv6_with_unknown(tmp_path: Path) -> None:
    path = write_country_db(tmp_path / "v4.mmdb", {"81.2.69.0/24": "GB"})
    assert maxminddb.open_database(str(path)).metadata().ip_version == 4
    db = open_database(str(path), "country")
    assert db.country("81.2.69.1") == "GB"
    assert db.country("2001:db8::1") == ""


def test_registered_country_when_no_location(tmp_path: Path) -> None:
    path = write_country_db(tmp_path / "r.mmdb", {"81.2.69.0/24": country_record("SE", registered_only=True)})
    assert open_database(str(path), "country").country("81.2.69.1") == "SE"


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ({"country": {"iso_code": "DE"}}, "DE"),
        ({"country": {"iso_code": "de"}}, ""),  # not an ISO code as MaxMind writes them
        ({"country": {"iso_code": "DEU"}}, ""),
        ({"country": {"iso_code": 49}}, ""),
        ({"country": "DE"}, ""),
        ({"continent": {"code": "EU"}}, ""),
        (None, ""),
        ("DE", ""),
    ],
)
def test_country_of_odd_records(record: object, code: str) -> None:
    assert country_of(record) == code


@pytest.mark.parametrize(
    ("record", "asn"),
    [({"autonomous_system_number": 13335}, 13335), ({"autonomous_system_number": True}, 0), ({"autonomous_system_number": -1}, 0), ({"autonomous_system_number": 1 << 33}, 0), ({}, 0)],
)
def test_asn_of_odd_records(record: object, asn: int) -> None:
    assert asn_of(record) == asn


# refused databases


def test_garbage_is_refused() -> None:
    path = str(CONFIG_GEO / "corrupt.mmdb")
    with pytest.raises(ConfigError) as err:
        open_database(path, "country")
    assert str(err.value) == f"{path}: not a MaxMind database (Error opening database file. Is this a valid MaxMind DB file?)"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_truncated_database_is_refused(tmp_path: Path, keep: float) -> None:
    whole = write_country_db(tmp_path / "whole.mmdb").read_bytes()
    cut = tmp_path / "cut.mmdb"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(ConfigError) as err:
        open_database(str(cut), "country")
    assert str(err.value).startswith(f"{cut}: not a MaxMind database")


def test_a_corrupt_data_section_is_refused(tmp_path: Path) -> None:
    """Metadata intact, search tree pointing past the data: the sample lookups at load fail."""
    data = bytearray(write_country_db(tmp_path / "ok.mmdb").read_bytes())
    meta = data.rfind(b"\xab\xcd\xefMaxMind.com")
    tree_end = data.find(b"\0" * 16)  # the separator between the search tree and the data section
    assert 0 < tree_end < meta
    for i in range(tree_end + 16, meta):  # overwrite every record with pointers to nowhere
        data[i] = 0x3F
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        open_database(str(bad), "country")
    assert str(err.value).startswith(f"{bad}: corrupt MaxMind database (Error while looking up data for ")
    assert "contains bad data" in str(err.value)


def test_a_corrupt_record_past_the_sample_answers_unknown_never_raises(tmp_path: Path) -> None:
    """Load checks a sample; a bad record beyond it is an unknown country at lookup, not an exception."""
    nets = {f"10.{i // 256}.{i % 256}.0/24": {"country": {"iso_code": "DE", "names": {"en": f"n{i:04d}"}}} for i in range(300)}
    data = bytearray(write_country_db(tmp_path / "many.mmdb", nets).read_bytes())
    at = data.find(b"n0299")  # the record of 10.1.43.0/24, the last network in tree order
    assert data[at - 1] == 0x45  # a 5-byte string
    data[at - 1] = 0x3F  # now a pointer far past the end of the data section
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(bytes(data))
    db = open_database(str(bad), "country")
    with pytest.raises(maxminddb.InvalidDatabaseError):
        maxminddb.open_database(str(bad)).get("10.1.43.1")  # what the reader itself does
    assert db.country("10.1.43.1") == ""
    assert db.country("10.0.5.1") == "DE"


def test_kinds_are_not_swapped(dbs: tuple[Path, Path]) -> None:
    country, asn = (str(p) for p in dbs)
    with pytest.raises(ConfigError) as err:
        open_database(asn, "country")
    assert str(err.value) == f"{asn}: an ASN database; country_database needs a Country or City database (database_type 'GeoLite2-ASN')"
    with pytest.raises(ConfigError) as err:
        open_database(country, "asn")
    assert str(err.value) == f"{country}: a country database; asn_database needs an ASN database (database_type 'GeoLite2-Country')"


def test_a_database_without_the_expected_fields_is_refused(tmp_path: Path) -> None:
    path = write_country_db(tmp_path / "odd.mmdb", {"81.2.69.0/24": {"city": {"names": {"en": "London"}}}}, database_type="Odd-DB")
    with pytest.raises(ConfigError) as err:
        open_database(str(path), "country")
    assert str(err.value) == f"{path}: a database whose records have no country.iso_code (database_type 'Odd-DB')"


def test_a_missing_database_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        open_database(str(tmp_path / "nope.mmdb"), "asn")
    assert str(err.value) == f"{tmp_path / 'nope.mmdb'}: cannot read database: No such file or directory"


def test_the_committed_test_databases_are_current() -> None:
    """tests/config/geo/ holds databases for the bad-policy files (python -m tests.support.geo)."""
    assert open_database(str(CONFIG_GEO / "country.mmdb"), "country").country("203.0.113.1") == "KP"
    assert open_database(str(CONFIG_GEO / "asn.mmdb"), "asn").asn("203.0.113.1") == 64501


# AS number lists


def test_asn_list_file(tmp_path: Path) -> None:
    path = tmp_path / "hosting.txt"
    path.write_text("# hosting providers\n16509 amazon\nAS15169   google cloud  # trailing comment\nas13335\n\n16509 duplicate\n")
    lst = load_asn_file("hosting", str(path))
    assert len(lst) == 3
    assert lst.match(16509) == "amazon"  # the first label wins
    assert lst.match(15169) == "google cloud"
    assert lst.match(13335) == "AS13335"
    assert lst.match(64512) is None
    assert lst.match(0) is None


@pytest.mark.parametrize(
    ("line", "shown"),
    [("ASX cloud", "ASX"), ("0", "0"), ("4294967296", "4294967296"), ("-5", "-5"), ("AS 5", "AS"), ("1.5", "1.5")],
)
def test_bad_asn_lines_name_file_and_line(tmp_path: Path, line: str, shown: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(f"# ok\n16509 amazon\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_asn_file("hosting", str(path))
    assert str(err.value) == f"{path}:3: asn: not an AS number: {shown!r} (write 13335 or AS13335)"


def test_asn_list_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.txt"
    path.write_bytes(b"16509 \xff\xfe\n")
    with pytest.raises(ConfigError) as err:
        load_asn_file("hosting", str(path))
    assert str(err.value) == f"{path}: AS number list is not valid UTF-8"
