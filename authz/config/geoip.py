"""MaxMind-format databases (country and AS number) and AS-number list files.

``open_database(path, kind)`` reads a MaxMind DB file (GeoIP2 / GeoLite2
Country or City, GeoLite2 ASN, or any database of the same layout) and checks
it before it is used: the file must be a MaxMind DB (metadata marker, a known
record size, a search tree that fits in the file), of the kind the policy
field says (country records hold ``country.iso_code`` or
``registered_country.iso_code``, ASN records ``autonomous_system_number``;
a Country file given as the ASN database is refused), hold networks, and
decode. The whole data section is not walked: for a City database that takes
tens of seconds of CPU; a corruption deep inside shows, at lookup time, as
an unknown country or network (``GeoDatabase.get`` never raises).

How the database is held
------------------------
The file is read once, at load (or reload, in the watcher's thread), into a
private in-memory file (``memfd_create``), which the C reader of
``maxminddb`` maps (``MODE_MMAP_EXT``). So:

* no lookup touches the disk: the mapping is of memory, not of the
  operator's file (with ``MODE_MMAP`` on the file itself, the first lookup
  landing on a cold page would wait for the disk);
* a database rewritten in place (``cp new.mmdb GeoLite2-Country.mmdb``
  rather than a rename) cannot change or truncate what a running process
  reads; mapping the operator's file would show it half-written, or kill
  the process with SIGBUS when it shrinks;
* lookups run in C: 1 to 3 us, most of it building the record's Python
  objects, against 12 to 20 us for the pure-Python ``MODE_MEMORY`` reader
  (measured on a 5,000-network test database); answers are cached per
  address above this (``authz.stages.geo``).

The price is one copy of the file per process (GeoLite2-Country and ASN are
about 10 MB each, City about 70 MB). Where ``memfd_create`` or the C
extension is missing, the pure-Python reader holds the bytes instead
(``MODE_FD`` over the copy read at load, which is ``MODE_MEMORY``).

An AS-number list has one AS number a line, with an optional label; ``#``
starts a comment::

    # hosting and cloud providers
    16509  amazon
    AS15169 google
"""

from __future__ import annotations

import io
import os
import re
from typing import Any, Literal

import maxminddb
from maxminddb import InvalidDatabaseError

from authz.errors import ConfigError

Kind = Literal["country", "asn"]

#: a database larger than this is refused (GeoIP2 City is about 70 MB)
MAX_DATABASE_BYTES = 1 << 30
#: addresses looked up at load: each must decode (the answer may be "not found")
_PROBE_ADDRESSES = ("1.1.1.1", "8.8.8.8", "81.2.69.160", "2001:4860:4860::8888")
#: networks whose records are checked for the expected fields at load
_SAMPLE_NETWORKS = 256
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_MAX_ASN = (1 << 32) - 1


def _has_extension() -> bool:
    try:
        from maxminddb import extension
    except ImportError:
        return False
    return hasattr(extension, "Reader")


class GeoDatabase:
    """One MaxMind database held in memory, of one kind: ``country`` or ``asn``.

    ``get`` answers the country code ("" when unknown) or the AS number (0 when
    unknown) of an address in canonical form.
    """

    __slots__ = ("path", "kind", "database_type", "build_epoch", "in_c", "_reader")

    def __init__(self, path: str, kind: Kind, reader: Any, in_c: bool) -> None:
        self.path = path
        self.kind = kind
        meta = reader.metadata()
        self.database_type: str = str(meta.database_type)
        self.build_epoch: int = int(meta.build_epoch)
        #: whether lookups run in the C extension (else the pure-Python reader)
        self.in_c = in_c
        self._reader = reader

    def record(self, ip: str) -> Any:
        """The raw record of ``ip``, or None (not found, not an address, or unreadable)."""
        try:
            return self._reader.get(ip)
        except (ValueError, InvalidDatabaseError, TypeError):
            return None

    def country(self, ip: str) -> str:
        return country_of(self.record(ip))

    def asn(self, ip: str) -> int:
        return asn_of(self.record(ip))

    def describe(self) -> str:
        return f"{self.database_type} ({self.kind}, {'C' if self.in_c else 'pure Python'} reader)"


def country_of(record: Any) -> str:
    """The ISO 3166-1 alpha-2 code of a Country/City record: where the address is, else where it is registered."""
    if not isinstance(record, dict):
        return ""
    for key in ("country", "registered_country"):
        part = record.get(key)
        if isinstance(part, dict):
            code = part.get("iso_code")
            if isinstance(code, str) and _COUNTRY.match(code):
                return code
    return ""


def asn_of(record: Any) -> int:
    if not isinstance(record, dict):
        return 0
    asn = record.get("autonomous_system_number")
    if isinstance(asn, int) and not isinstance(asn, bool) and 0 < asn <= _MAX_ASN:
        return asn
    return 0


def open_database(path: str, kind: Kind) -> GeoDatabase:
    """Read and check a MaxMind database. Errors name the file.

    :raises ConfigError: unreadable, too large, not a MaxMind DB, or not of ``kind``
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_DATABASE_BYTES:
                raise ConfigError(path, 0, "", f"database is {size} bytes, more than the {MAX_DATABASE_BYTES} accepted")
            data = f.read(MAX_DATABASE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read database: {exc.strerror or exc}") from None
    if len(data) > MAX_DATABASE_BYTES:
        raise ConfigError(path, 0, "", f"database is more than the {MAX_DATABASE_BYTES} bytes accepted")
    try:
        reader, in_c = _reader(data)
    except (InvalidDatabaseError, ValueError, TypeError, OSError) as exc:
        raise ConfigError(path, 0, "", f"not a MaxMind database ({_short(exc)})") from None
    db = GeoDatabase(path, kind, reader, in_c)
    try:
        _check(db, reader)
    except (InvalidDatabaseError, ValueError, TypeError, OSError, RuntimeError) as exc:
        raise ConfigError(path, 0, "", f"corrupt MaxMind database ({_short(exc)})") from None
    return db


def _reader(data: bytes) -> tuple[Any, bool]:
    """A reader over a private copy of ``data``: the C reader on a memfd, else the pure-Python one."""
    if _has_extension() and hasattr(os, "memfd_create"):
        fd = os.memfd_create("authz-geoip", os.MFD_CLOEXEC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # the C reader opens the path, maps it and closes its own descriptor;
            # the mapping keeps the memory file alive after ours is closed
            return maxminddb.open_database(f"/proc/self/fd/{fd}", maxminddb.MODE_MMAP_EXT), True
        finally:
            os.close(fd)
    return maxminddb.open_database(io.BytesIO(data), maxminddb.MODE_FD), False


def _check(db: GeoDatabase, reader: Any) -> None:
    meta = reader.metadata()
    if meta.binary_format_major_version != 2:
        raise ValueError(f"binary format {meta.binary_format_major_version}, this reader knows 2")
    if meta.ip_version not in (4, 6):
        raise ValueError(f"ip_version {meta.ip_version}")
    dbtype = db.database_type.lower()
    if db.kind == "country" and "asn" in dbtype:
        raise _WrongKind(db, "an ASN database; country_database needs a Country or City database")
    if db.kind == "asn" and ("country" in dbtype or "city" in dbtype):
        raise _WrongKind(db, "a country database; asn_database needs an ASN database")
    for ip in _PROBE_ADDRESSES:
        if ":" in ip and meta.ip_version == 4:
            continue
        reader.get(ip)  # must decode; raises InvalidDatabaseError when it does not
    found = False
    seen = 0
    for _network, record in reader:
        seen += 1
        if (country_of(record) if db.kind == "country" else asn_of(record)):
            found = True
            break
        if seen >= _SAMPLE_NETWORKS:
            break
    if not seen:
        raise _WrongKind(db, "a database without networks")
    if not found:
        field = "country.iso_code" if db.kind == "country" else "autonomous_system_number"
        raise _WrongKind(db, f"a database whose records have no {field}")


class _WrongKind(ConfigError):
    def __init__(self, db: GeoDatabase, what: str) -> None:
        super().__init__(db.path, 0, "", f"{what} (database_type {db.database_type!r})")


_MEMFD_PATH = re.compile(r"\s*\(?/proc/self/fd/\d+\)?")


def _short(exc: BaseException) -> str:
    # the reader names the private memory file it was given; that path means nothing to an operator
    text = _MEMFD_PATH.sub("", str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


# AS number lists


class AsnList:
    """AS numbers with labels (hosting providers, ...), replaced whole when its file is reloaded."""

    __slots__ = ("name", "_labels")

    def __init__(self, name: str, labels: dict[int, str] | None = None) -> None:
        self.name = name
        self._labels: dict[int, str] = labels if labels is not None else {}

    def match(self, asn: int) -> str | None:
        """The label of ``asn``, or None when it is not listed."""
        return self._labels.get(asn) if asn else None

    def __len__(self) -> int:
        return len(self._labels)


_ASN = re.compile(r"^(?:AS)?([0-9]{1,10})$", re.IGNORECASE)


def load_asn_file(name: str, path: str) -> AsnList:
    """Read an AS number list; errors name the file and the line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ConfigError(path, 0, "", f"cannot read AS number list: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, 0, "", "AS number list is not valid UTF-8") from None
    labels: dict[int, str] = {}
    for lineno, line in enumerate(lines, 1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        number, _, label = body.partition(" ")
        m = _ASN.match(number)
        asn = int(m.group(1)) if m else 0
        if not 0 < asn <= _MAX_ASN:
            raise ConfigError(path, lineno, "asn", f"not an AS number: {number!r} (write 13335 or AS13335)")
        labels.setdefault(asn, label.strip() or f"AS{asn}")
    return AsnList(name, labels)
