"""What a request's own text says about its sender: probes, tools, missing headers, TLS family.

Pure functions over strings, compiled once at import; ``authz.stages.evidence``
turns their findings into evidence. Every pattern is bounded: quantifiers have
upper limits (no pattern can backtrack without end), the query is cut to its
first bytes and the user agent to its first 512 characters, and the path is
cut to its first 4096 characters.

The set is small and reviewed, not a WAF rule set: it names what scanners and
injection kits send in volume, with forms that ordinary API traffic does not
have (docs/signals.md lists each pattern's false positives). Each finding is
named by its pattern, never by the text it matched: the name goes to the
decision log, the attacker's text does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote, unquote_plus

#: how much of the user agent is looked at
MAX_UA_CHARS = 512
#: how much of the path is looked at (limits.max_target_bytes may allow up to 1 MiB)
MAX_PATH_CHARS = 4096

# -- probes: injection, traversal, scanner paths -------------------------------------------------
#
# Each pattern runs only when one of its trigger strings is in the text: a few substring tests
# (C speed) instead of a large alternation tried at every position, which costs Python's
# regex engine tens of microseconds on an ordinary request. A trigger is a literal that every
# text the pattern can match contains.

_SEP = r"[\s/*()+]{1,40}"  # what separates SQL words in an injection: blanks, comments, parentheses


def _rule(name: str, triggers: tuple[str, ...], pattern: str) -> tuple[str, tuple[str, ...], re.Pattern[str]]:
    return name, triggers, re.compile(pattern)


#: (name, triggers, pattern), in the order findings are named; texts are lower-cased first
INJECTION = (
    _rule("sql_union", ("union",), rf"\bunion{_SEP}(?:all{_SEP}|distinct{_SEP})?select\b"),
    _rule("sql_tautology", ("'",), r"'[\s)]{0,5}(?:or|and)\b[\s(]{0,5}'?\w{1,10}'?\s{0,5}(?:=|like\b)\s{0,5}'?\w{1,10}"),
    _rule("sql_numeric_tautology", (" or ", " and ", "\tor", "\tand", "/or", "/and"), r"\b(?:or|and)[\s/*]{1,10}(\d{1,10})\s{0,5}=\s{0,5}\1\b"),
    _rule("sql_comment", ("'",), r"'\s{0,5}(?:--|/\*|#)"),
    _rule(
        "sql_stacked", (";",),
        r";\s{0,5}(?:drop\s{1,5}(?:table|database)|truncate\s{1,5}table|delete\s{1,5}from|insert\s{1,5}into|exec(?:ute)?\s{1,5}(?:xp_|sp_)|shutdown\b)",
    ),
    _rule("sql_time", ("sleep", "benchmark", "waitfor"), r"\b(?:sleep|pg_sleep|benchmark)\s{0,5}\(\s{0,5}\d|\bwaitfor\s{1,5}delay\s{1,5}'"),
    _rule(
        "sql_schema", ("information_schema", "xp_cmdshell", "load_file", "outfile", "dumpfile", "@@version"),
        r"\binformation_schema\b|\bxp_cmdshell\b|\bload_file\s{0,5}\(|\binto\s{1,5}(?:out|dump)file\b|@@version\b",
    ),
    _rule("xss_script", ("<",), r"<\s{0,5}script\b"),
    _rule("xss_handler", ("<",), r"<[a-z]{1,20}\b[^>]{0,200}\bon[a-z]{3,30}\s{0,5}="),
    _rule("xss_javascript_url", ("javascript",), r"\bjavascript\s{0,5}:[^\s]{0,80}\("),
    _rule("jndi", ("${",), r"\$\{\s{0,5}(?:jndi\s{0,5}:|\$\{|(?:lower|upper|env|sys|date):|::-)"),
    _rule("template", ("{{", "${"), r"\{\{\s{0,5}\d{1,5}\s{0,5}\*\s{0,5}\d{1,5}\s{0,5}\}\}|\$\{\s{0,5}\d{1,5}\s{0,5}\*\s{0,5}\d{1,5}\s{0,5}\}"),
    _rule(
        "shell", ("$(", "`", "wget", "curl"),
        r"\$\(\s{0,5}(?:id|whoami|uname|cat|curl|wget)\b|`\s{0,5}(?:id|whoami|uname)\b|[;|&]\s{0,5}(?:wget|curl)\s{1,5}(?:-\S{1,20}\s{1,5}){0,5}https?://",
    ),
)
#: the injection rules worth running on a user agent: no browser's has these triggers
INJECTION_UA = tuple(r for r in INJECTION if r[0] in ("sql_tautology", "sql_comment", "xss_script", "xss_handler", "jndi", "template"))
TRAVERSAL = (
    _rule("dot_dot", ("..",), r"\.\.[/\\]"),
    _rule("encoded_dot_dot", ("%c0%a", "%e0%80%ae", "%u", "%252e", "%%32%65"), r"%c0%ae|%c0%af|%e0%80%ae|%u002e|%uff0e|%252e|%%32%65"),
    _rule(
        "system_file", ("/etc/", "/proc/", "c:\\", "win.ini", "boot.ini"),
        r"/etc/(?:passwd|shadow|hosts|group)\b|/proc/self/|\bc:\\+windows\\|\bwin\.ini\b|\bboot\.ini\b",
    ),
    _rule("null_byte", ("%00", "\x00"), r"%00|\x00"),
)

#: paths of files and tools that no API serves and every scanner asks for: one path segment ...
_SCANNER_SEGMENTS: dict[str, str] = {
    **dict.fromkeys(
        (".env", ".git", ".svn", ".hg", ".bzr", ".aws", ".ssh", ".docker", ".npmrc", ".htaccess", ".htpasswd", ".ds_store", ".vscode", ".idea"),
        "dotfile",
    ),
    **dict.fromkeys(("wp-login.php", "wp-admin", "wp-content", "wp-includes", "wp-config.php", "xmlrpc.php"), "wordpress"),
    **dict.fromkeys(("phpmyadmin", "myadmin", "phpinfo.php", "server-status", "server-info", "_profiler"), "admin_tool"),
    **dict.fromkeys(("cgi-bin", "boaform", "hnap1", "web.config"), "exploit"),
    **dict.fromkeys(("id_rsa", "id_ed25519"), "dump"),
}
#: ... or two
_SCANNER_PAIRS: dict[tuple[str, str], str] = {
    **dict.fromkeys(
        (("vendor", "phpunit"), ("actuator", "env"), ("actuator", "heapdump"), ("actuator", "gateway"), ("actuator", "jolokia"), ("autodiscover", "autodiscover.xml")),
        "exploit",
    ),
    **dict.fromkeys((("manager", "html"), ("solr", "admin"), ("telescope", "requests")), "admin_tool"),
}
_DOTENV_VARIANT = re.compile(r"^\.env\.[a-z0-9_-]{1,20}$")
_DUMP = re.compile(r"^(?:backup|dump|database|db)\.(?:sql|sql\.gz|zip|tar|tar\.gz|bak)$")


Rules = tuple[tuple[str, tuple[str, ...], re.Pattern[str]], ...]


def _gate(rules: Rules) -> re.Pattern[str]:
    """One search for any trigger of ``rules``: most texts have none, and then no rule runs."""
    triggers = sorted({t for _name, ts, _p in rules for t in ts}, key=lambda t: -len(t))
    return re.compile("|".join(re.escape(t) for t in triggers))


_INJECTION_GATE = _gate(INJECTION)
_INJECTION_UA_GATE = _gate(INJECTION_UA)
_TRAVERSAL_GATE = _gate(TRAVERSAL)


def _first(rules: Rules, gate: re.Pattern[str], text: str) -> str:
    """The name of the first rule ``text`` matches, or ""."""
    if not text or gate.search(text) is None:
        return ""
    for name, triggers, pattern in rules:
        for t in triggers:
            if t in text:
                if pattern.search(text) is not None:
                    return name
                break
    return ""


def scanner_path(route_path: str) -> str:
    """The kind of scanner target a canonical path is (``dotfile``, ``wordpress``...), or ""."""
    segments = route_path.lower().split("/")
    previous = ""
    for segment in segments:
        kind = _SCANNER_SEGMENTS.get(segment) or _SCANNER_PAIRS.get((previous, segment))
        if kind:
            return kind
        if "." in segment and (_DOTENV_VARIANT.match(segment) or _DUMP.match(segment)):
            return "dotfile" if segment.startswith(".env") else "dump"
        previous = segment
    return ""


def _decoded(text: str, plus: bool) -> str:
    """``text`` percent-decoded twice (double encoding is a classic evasion), lower-cased."""
    if "%" in text or (plus and "+" in text):
        text = unquote_plus(text) if plus else unquote(text)
        if "%" in text:
            text = unquote(text)
    return text.lower()


def probes(path: str, query: str, route_path: str, user_agent: str, max_query_bytes: int) -> list[tuple[str, str]]:
    """The probe families a request shows, each with the name of the first pattern that matched.

    Families: ``injection`` (SQL, script, JNDI lookups, templates, shell in
    the path, query or user agent), ``traversal`` (``../`` and its encodings,
    system files, NUL bytes in the path or query), ``scanner_path`` (the
    canonical path is a file or tool no API serves). ``query`` is cut to its
    first ``max_query_bytes`` characters, the paths to their first
    ``MAX_PATH_CHARS``, before anything is decoded.
    """
    query = query[:max_query_bytes]
    path = path[:MAX_PATH_CHARS]
    raw = f"{path}?{query}".lower() if query else path.lower()
    decoded = _decoded(path, False)
    if query:
        decoded = f"{decoded}?{_decoded(query, True)}"
    found: list[tuple[str, str]] = []
    name = _first(INJECTION, _INJECTION_GATE, decoded) or (_user_agent(user_agent[:MAX_UA_CHARS]).injection if user_agent else "")
    if name:
        found.append(("injection", name))
    name = _first(TRAVERSAL, _TRAVERSAL_GATE, raw) or (_first(TRAVERSAL, _TRAVERSAL_GATE, decoded) if decoded != raw else "")
    if name:
        found.append(("traversal", name))
    name = scanner_path(route_path[:MAX_PATH_CHARS])
    if name:
        found.append(("scanner_path", name))
    return found


# -- user agents ---------------------------------------------------------------------------------

#: tools whose only use against an API is finding its holes: words of the user agent ...
_SCANNER_WORDS = frozenset(
    (
        "sqlmap", "nikto", "nuclei", "masscan", "zgrab", "nmap", "gobuster", "dirbuster", "dirb", "ffuf", "wfuzz",
        "feroxbuster", "acunetix", "netsparker", "wpscan", "jaeles", "whatweb", "openvas", "arachni", "skipfish", "w3af",
        "zaproxy",
    )
)  # fmt: skip
#: ... and phrases
_SCANNER_PHRASES = ("fuzz faster u fool", "burp suite", "owasp zap")
#: how HTTP libraries, command-line clients and crawler frameworks begin their user agents
_AUTOMATION_PREFIXES = (
    "curl", "wget", "python-requests", "python-urllib", "python-httpx", "python/", "aiohttp", "httpx", "go-http-client",
    "okhttp", "java/", "apache-httpclient", "jakarta commons-httpclient", "libwww-perl", "lwp::simple", "httpie",
    "node-fetch", "undici", "axios", "got ", "postmanruntime", "insomnia", "powershell", "ruby", "faraday",
    "guzzlehttp", "php/", "dart/", "reqwest", "rust-reqwest", "hackney", "winhttp", "scrapy", "mechanize", "colly",
    "http.rb", "restsharp", "ktor-client", "libcurl", "pycurl",
)  # fmt: skip
#: words that name automation wherever they are (driven and headless browsers, frameworks)
_AUTOMATION_WORDS = frozenset(
    (
        "headlesschrome", "phantomjs", "slimerjs", "selenium", "webdriver", "puppeteer", "playwright", "scrapy",
        "python-requests", "go-http-client", "okhttp", "libcurl", "htmlunit",
    )
)  # fmt: skip
_WORD = re.compile(r"[a-z][a-z0-9_-]*")
_BROWSER_TOKENS = ("chrome/", "chromium/", "firefox/", "safari/", "edg/", "opr/")


@dataclass(frozen=True, slots=True)
class UserAgent:
    """What a user agent says its sender is: an attack tool, an automation tool, a browser."""

    scanner: str = ""
    automation: str = ""
    browser: bool = False
    #: the injection pattern the user agent holds ("" for none): Log4Shell was sent there
    injection: str = ""


def user_agent(text: str) -> UserAgent:
    """Read a user agent (its first 512 characters): the tools it names, whether it claims a browser.

    Cached: a service sees few distinct user agents, and the answer for one
    costs about 4 us to work out (a bounded cache: random ones only miss).
    """
    return _user_agent(text[:MAX_UA_CHARS])


@lru_cache(maxsize=4096)
def _user_agent(text: str) -> UserAgent:
    ua = text.lower()
    if not ua:
        return UserAgent()
    words = _WORD.findall(ua)
    hit = _SCANNER_WORDS.intersection(words)
    scanner = min(hit) if hit else next((p for p in _SCANNER_PHRASES if p in ua), "")
    automation = ""
    if ua.startswith(_AUTOMATION_PREFIXES):
        automation = next(p for p in _AUTOMATION_PREFIXES if ua.startswith(p)).strip().rstrip("/")
    else:
        hit = _AUTOMATION_WORDS.intersection(words)
        automation = min(hit) if hit else ""
    browser = not automation and ua.startswith("mozilla/5.0 (") and any(t in ua for t in _BROWSER_TOKENS)
    return UserAgent(scanner, automation, browser, _first(INJECTION_UA, _INJECTION_UA_GATE, ua))


def scanner_tool(text: str) -> str:
    """The attack tool a user agent names, or ""."""
    return user_agent(text).scanner


def automation_tool(text: str) -> str:
    """The HTTP library, command-line client or driven browser a user agent names, or ""."""
    return user_agent(text).automation


def claims_browser(text: str) -> bool:
    """Whether a user agent says it is a browser (and names no automation)."""
    return user_agent(text).browser


#: headers every browser and most HTTP libraries send; their absence says "hand-made request"
ORDINARY_HEADERS = ("user-agent", "accept", "accept-language")


def missing_headers(headers: Mapping[str, str]) -> list[str]:
    """Which of ``ORDINARY_HEADERS`` are missing or empty."""
    return [name for name in ORDINARY_HEADERS if not headers.get(name)]


# -- TLS fingerprints (JA4) ----------------------------------------------------------------------

#: a JA4 fingerprint: a_b_c, e.g. t13d1516h2_8daaf6152771_02713d6af862
JA4 = re.compile(r"^([tqd])([0-9s][0-9a-z])([di])([0-9]{2})([0-9]{2})([0-9a-z]{2})_([0-9a-f]{12})_([0-9a-f]{12})$")

BROWSER = "browser"
LIBRARY = "library"

#: the cipher-suite hash (JA4 section b) of TLS stacks, to the family and the stack. Section b
#: depends on the TLS library and its cipher configuration, not on the extensions a version
#: adds, so it changes less often than the whole fingerprint; it still changes with library
#: releases and settings (docs/signals.md). Sources: FoxIO's JA4+ mapping (Chromium,
#: Python, Go) and fingerprints Envoy 1.40 computed on this project's machines (curl 7.88
#: with OpenSSL 3.0, wget 1.21 with GnuTLS, Node.js 20, Java 17 HttpClient).
CIPHER_FAMILIES: dict[str, tuple[str, str]] = {
    "8daaf6152771": (BROWSER, "chromium"),
    "55b375c5d22e": (BROWSER, "chromium-quic"),
    "85036bcba153": (LIBRARY, "python"),
    "9dc949149365": (LIBRARY, "go"),
    "e8f1e7e78f70": (LIBRARY, "curl-openssl"),
    "723694b0fccc": (LIBRARY, "wget-gnutls"),
    "a33745022dd6": (LIBRARY, "nodejs"),
    "db35923f8641": (LIBRARY, "java"),
}


def valid_ja4(text: str) -> bool:
    return len(text) == 36 and JA4.match(text) is not None


def tls_family(ja4: str, prefixes: tuple[tuple[str, str, str], ...], ciphers: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """(family, name) of a JA4 fingerprint: ``browser``, ``library``, or ("", "") when unknown.

    In order: the policy's prefixes (longest first), the cipher-suite hash
    table, then two rules of shape: no ALPN offered (``00``) and a highest TLS
    version below 1.2 are not what any current browser sends.
    """
    for prefix, family, name in prefixes:
        if ja4.startswith(prefix):
            return family, name
    m = JA4.match(ja4)
    if m is None:
        return "", ""
    known = ciphers.get(m.group(7))
    if known is not None:
        return known
    if m.group(6) == "00":
        return LIBRARY, "no-alpn"
    if m.group(2) in ("10", "11", "s3", "s2", "00"):
        return LIBRARY, "old-tls"
    return "", ""
