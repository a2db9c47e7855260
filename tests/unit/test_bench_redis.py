"""bench/redisbench.py and bench/meter.py: what the bench reads from Redis, Envoy and authz's decision ids."""

from __future__ import annotations

import pytest
from redis._parsers.helpers import parse_info

from bench import meter, redisbench

# INFO commandstats as Redis 7 writes it after a measured interval
COMMANDSTATS = (
    "# Commandstats\r\n"
    "cmdstat_evalsha:calls=2607,usec=180000,usec_per_call=69.05,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_get:calls=5214,usec=2000,usec_per_call=0.38,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_set:calls=5214,usec=6000,usec_per_call=1.15,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_ping:calls=3,usec=2,usec_per_call=0.67,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_config|resetstat:calls=1,usec=20,usec_per_call=20.00,rejected_calls=0,failed_calls=0\r\n"
    "cmdstat_script|load:calls=1,usec=50,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n"
)


def test_command_calls_from_redis_py_info() -> None:
    calls = redisbench.command_calls(parse_info(COMMANDSTATS))
    assert calls == {"evalsha": 2607, "get": 5214, "set": 5214, "ping": 3, "config|resetstat": 1, "script|load": 1}


def test_round_trips_split_client_commands_from_script_commands() -> None:
    calls = redisbench.command_calls(parse_info(COMMANDSTATS))
    rt = redisbench.round_trips(calls, decisions=2607, scripted=frozenset({"get", "set", "pexpire"}))
    assert rt.per_decision == 1.0
    assert rt.other == {"ping": 3, "script|load": 1}  # the bench's own reset is left out
    assert rt.in_scripts == {"get": 5214, "set": 5214}
    assert rt.other_per_decision == pytest.approx(4 / 2607)
    assert rt.describe_scripts() == "get 2.00, set 2.00"


def test_round_trips_with_two_evalsha_per_decision_shows_two() -> None:
    rt = redisbench.round_trips({"evalsha": 200}, decisions=100, scripted=frozenset())
    assert rt.per_decision == 2.0
    assert rt.describe_other() == "none"
    assert redisbench.round_trips({}, decisions=0, scripted=frozenset()).per_decision == 0.0


def test_lua_commands_and_authz_scripts() -> None:
    text = "local v = redis.call('GET', KEYS[1])\nredis.pcall(\"PEXPIRE\", KEYS[1], ttl)\nlocal s = 'redis.call'\n"
    assert redisbench.lua_commands(text) == {"get", "pexpire"}
    # the batch script's helpers: read('HGETALL', k) and write('HSET', k, ...) are redis.call when applying
    assert redisbench.lua_commands("local raw = read('HGETALL', k[1])\nwrite('HSET', k[1], unpack(f))\nrewrite('X')") == {"hgetall", "hset"}
    scripted = redisbench.script_commands()
    # the batch script reads and writes buckets and reputation hashes; EVALSHA itself is never called from a script
    assert {"get", "set", "pexpire", "hset", "pttl"} <= scripted
    assert "evalsha" not in scripted and "ping" not in scripted


def test_hash_tags_group_one_identitys_keys() -> None:
    keys = [
        "authz:{ip:10.0.0.1}q:per-day:ip:10.0.0.1",
        "authz:{ip:10.0.0.1}q:per-second:ip:10.0.0.1",
        "authz:{ip:10.0.0.2}q:per-day:ip:10.0.0.2",
        "authz:{replay:07}epoch",
        "untagged",
    ]
    assert redisbench.hash_tag(keys[0]) == "ip:10.0.0.1"
    assert redisbench.hash_tag("a{}b") == ""
    groups = redisbench.group_by_identity(keys, "ip:")
    assert groups == {"ip:10.0.0.1": keys[:2], "ip:10.0.0.2": keys[2:3]}


def test_envoy_counter_matches_the_whole_name() -> None:
    text = "http.bench.downstream_rq_completed: 2607\nhttp.bench.downstream_rq_completed_extra: 1\nhttp.admin.downstream_rq_completed: 9\n"
    assert meter.parse_envoy_counter(text, "http.bench.downstream_rq_completed") == 2607
    with pytest.raises(ValueError):
        meter.parse_envoy_counter(text, "http.ingress.downstream_rq_completed")


def test_requests_per_endpoint_of_one_cluster_from_envoys_clusters_page() -> None:
    text = (
        "authz::observability_name::authz\n"
        "authz::127.0.0.1:9191::rq_total::3152\n"
        "authz::127.0.0.1:9192::rq_total::3136\n"
        "authz::127.0.0.1:9192::rq_error::4\n"
        "upstream::127.0.0.1:8080::rq_total::99\n"
        "authz_other::127.0.0.1:7000::rq_total::5\n"
    )
    assert meter.parse_endpoint_requests(text, "authz") == {9191: 3152, 9192: 3136}
    assert meter.parse_endpoint_requests(text, "missing") == {}
