"""``authz solve``: a challenge in, a solution header out, bounded in difficulty and time."""

from __future__ import annotations

import pathlib
import time

from click.testing import CliRunner

from authz.challenge import format_challenge, parse_solution, solved
from authz.cli import cli
from authz.clock import FixedClock
from authz.request import Request
from authz.stages.challenge import Challenger
from authz.stages.context import Ctx

SECRET = b"cli-test-challenge-secret-0123456789abcdefghijklmnop"


def issued(difficulty: int = 10) -> str:
    """A real challenge header value, as authz issues it now."""
    now = FixedClock(int(time.time() * 1000)).now_ms()
    ctx = Ctx(Request(method="GET", path="/", host="h", headers={}, peer_ip="192.0.2.1"), now, "id")
    return Challenger("c", SECRET, base_difficulty=1, max_difficulty=32).issue(ctx, "ip:192.0.2.1", "r", difficulty)[0][1]


def test_solves_a_curl_response_from_stdin_and_prints_the_header() -> None:
    header = issued()
    response = (
        "HTTP/1.1 401 Unauthorized\r\n"
        "www-authenticate: PoW realm=\"authz\"\r\n"
        f"authz-challenge: {header}\r\n"
        "content-type: application/json\r\n\r\n"
        '{"error":"challenge.required"}\n'
    )
    result = CliRunner().invoke(cli, ["solve"], input=response)
    assert result.exit_code == 0, result.output
    name, _, value = result.output.rstrip("\n").partition(": ")
    assert name == "Authz-Solution"
    token, nonce = parse_solution(value)
    assert f'c="{token}"' in header and solved(token, nonce, 10)


def test_solves_a_file_and_a_bare_value(tmp_path: pathlib.Path) -> None:
    header = issued()
    (tmp_path / "refused.txt").write_text(f"HTTP/2 401\nauthz-challenge: {header}\n\n")
    result = CliRunner().invoke(cli, ["solve", str(tmp_path / "refused.txt")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Authz-Solution: c=")

    result = CliRunner().invoke(cli, ["solve", "--value-only", "--challenge", header])
    assert result.exit_code == 0, result.output
    token, nonce = parse_solution(result.output.strip())
    assert solved(token, nonce, 10)


def test_refuses_input_without_a_challenge() -> None:
    result = CliRunner().invoke(cli, ["solve"], input="HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\r\n{}")
    assert result.exit_code == 1
    assert result.output == "Error: no Authz-Challenge header in the response\n"
    result = CliRunner().invoke(cli, ["solve", "-c", 'v=1, c="x y", d=3, exp=5'])
    assert result.exit_code == 1
    assert "Error: the challenge's 'c' is not 1 to 256 characters" in result.output


def test_refuses_a_challenge_above_max_difficulty_without_working() -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["solve", "--max-difficulty", "20", "-c", issued(24)])
    assert result.exit_code == 1
    assert result.output == "Error: difficulty 24 is above the limit of 20 bits\n"
    assert time.monotonic() - started < 1


def test_gives_up_at_max_seconds() -> None:
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["solve", "--max-difficulty", "32", "--max-seconds", "0.3", "-c", issued(32)])
    elapsed = time.monotonic() - started
    assert result.exit_code == 1
    assert result.output.startswith("Error: no solution after ") and "time limit" in result.output
    assert 0.3 <= elapsed < 2.5


def test_refuses_an_expired_challenge() -> None:
    result = CliRunner().invoke(cli, ["solve", "-c", format_challenge("v1.abc", 8, int(time.time()) - 30)])
    assert result.exit_code == 1
    assert "expired" in result.output and "ask again" in result.output


def test_bounds_are_checked() -> None:
    result = CliRunner().invoke(cli, ["solve", "--max-difficulty", "33", "-c", issued()])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["solve", "--max-seconds", "0", "-c", issued()])
    assert result.exit_code == 2
