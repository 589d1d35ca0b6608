"""`fairbatch serve`: its configuration, its errors, and the command end to end."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib

import httpx
import pytest
from hypothesis import given, settings
from server_helpers import TEST_CONFIG

from benchmarks.main import main
from scheduler.errors import ConfigError
from sim.serve import SERVE_SCHEMA, banner, check_demo_keys, load_serve_config, mask, serve_config_from_dict, service
from sim.testing import wrong_values


def test_the_default_serves_the_default_pool_to_two_demo_tenants():
    config = load_serve_config(None)
    assert config.tenants == ["alice", "bob"]
    assert dict(config.api_keys) == {"key-alice": "alice", "key-bob": "bob"}
    assert config.default_tenant is None and config.model == "llama-3-8b"
    assert (config.sim.cluster.workers, config.sim.cluster.gpu, config.sim.policy.policy) == (2, "h100", "vtc")


def test_a_config_file_sets_keys_limits_and_tenant_quotas(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text(TEST_CONFIG)
    config = load_serve_config(path)
    assert config.tenants == ["alice", "bob", "limited"] and config.max_tokens == 4000
    assert config.sim.tenants[2].quota.requests_per_s == 0.01 and config.max_body_bytes == 8192


@pytest.mark.parametrize("serve,message", [
    ({"api_keys": {"key-x": "mallory"}}, "serve.api_keys.key-x: 'mallory' is not a configured tenant"),
    ({"api_keys": {"a key": "alice"}}, "serve.api_keys: a key must be non-empty without spaces"),
    ({"api_keys": ["key-alice"]}, "serve.api_keys: must be a table"),
    ({"default_tenant": "carol"}, "serve.default_tenant: 'carol' is not a configured tenant"),
    ({"max_tokens": 0}, "serve.max_tokens: must be an integer in [1, "),
    ({"stream_buffer": "big"}, "serve.stream_buffer: must be an integer"),
    ({"stream_interval": 0}, "serve.stream_interval: must be an integer in [1, "),
    ({"port": 80}, "serve: unknown key 'port'"),
    ({"model": ""}, "serve.model: must be a non-empty string"),
    ({"read_timeout_s": 0}, "serve.read_timeout_s: must be > 0"),
    ({"keep_alive_timeout_s": "long"}, "serve.keep_alive_timeout_s: must be a finite number > 0"),
    ({"metrics_key": ""}, "serve.metrics_key: must be a non-empty string without spaces"),
    ({"metrics_key": "key-bob", "api_keys": {"key-bob": "bob"}}, "serve.metrics_key: must differ from every API key"),
])
def test_bad_serve_keys_are_named(serve, message):
    table = tomllib.loads(TEST_CONFIG)
    table["serve"] = serve
    with pytest.raises(ConfigError, match=re.escape(message)):
        serve_config_from_dict(table)


@pytest.mark.parametrize("argv,message", [
    (["serve", "--speed", "-1"], "--speed: must be a finite number >= 0"),
    (["serve", "--speed", "nan"], "--speed: must be a finite number >= 0"),
    (["serve", "--config", "/no/such/file.toml"], "config file not found"),
    (["serve", "--host", "256.0.0.1", "--port", "0"], "--host/--port: cannot listen on 256.0.0.1:0"),
    (["serve", "--host", "0.0.0.0", "--port", "0"], "--host: 0.0.0.0 is not a loopback address, and the demo API "
                                                    "keys (key-alice, key-bob) are public; allowed: "),
])
def test_bad_command_lines_fail_with_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairbatch: error: ") and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["serve", "--port", "x"], "--port: must be an integer, got 'x'"),
    (["serve", "--port", "65536"], "--port: must be a port number in [0, 65535] (0 picks a free one), got 65536"),
    (["serve", "--speed", "fast"], "--speed: must be a number, got 'fast'"),
])
def test_flags_of_the_wrong_type_are_usage_errors_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err == f"fairbatch: error: {message}\n"


def test_the_command_serves_until_interrupted():
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.main", "serve", "--port", "0", "--speed", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stderr.readline() + process.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", banner).group(1)
        assert "ke…ce (alice), k…b (bob)" in banner and "key-alice" not in banner
        answer = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 3},
                            headers={"Authorization": "Bearer key-bob"}, timeout=10).json()
        assert answer["usage"]["completion_tokens"] == 3
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_the_timeouts_and_the_metrics_key_have_defaults_that_reach_the_server():
    config = load_serve_config(None)
    assert (config.read_timeout_s, config.keep_alive_timeout_s, config.metrics_key) == (30.0, 5.0, None)
    http = service(config, 0).server
    assert (http.read_timeout_s, http.keep_alive_timeout_s, http.metrics_key) == (30.0, 5.0, None)
    table = tomllib.loads(TEST_CONFIG)
    table["serve"] |= {"read_timeout_s": 2.5, "keep_alive_timeout_s": 1, "metrics_key": "scrape-me"}
    http = service(serve_config_from_dict(table), 0).server
    assert (http.read_timeout_s, http.keep_alive_timeout_s, http.metrics_key) == (2.5, 1.0, "scrape-me")


@pytest.mark.parametrize("limit,key,why", [
    ("{ tokens_per_s = 100, token_burst = 1 }", "token_burst", "a bucket of 1 tokens cannot hold the cheapest request"),
    ("{ tokens_per_s = 1 }", "tokens_per_s", "a bucket of 1 tokens"),
    ("{ requests_per_s = 2, request_burst = 0.5 }", "request_burst", "a bucket of 0.5 requests cannot hold one"),
])
def test_a_rate_limit_that_could_never_admit_a_request_is_a_named_error(tmp_path, capsys, limit, key, why):
    path = tmp_path / "serve.toml"
    path.write_text(TEST_CONFIG.replace("{ requests_per_s = 0.01, request_burst = 1 }", limit))
    assert main(["serve", "--config", str(path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fairbatch: error: tenants[2].rate_limit.{key}: ") and why in err
    assert len(err.strip().splitlines()) == 1


def test_the_smallest_burst_that_admits_a_request_is_accepted():
    table = tomllib.loads(TEST_CONFIG.replace("{ requests_per_s = 0.01, request_burst = 1 }",
                                              "{ tokens_per_s = 1, token_burst = 2 }"))
    assert serve_config_from_dict(table).sim.tenants[2].quota.token_burst == 2


@pytest.mark.parametrize("make,message", [
    (lambda path: path.mkdir(), "is a directory"),
    (lambda path: path.write_bytes(b"\xff\xfe[serve]"), "not UTF-8"),
    (lambda path: path.parent.joinpath("file").write_text(""), "cannot read"),
])
def test_a_config_that_cannot_be_read_is_a_named_error(tmp_path, capsys, make, message):
    path = tmp_path / "serve.toml"
    make(path)
    target = tmp_path / "file" / "serve.toml" if message == "cannot read" else path  # under a file: unreadable
    assert main(["serve", "--config", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fairbatch: error: {target}: ") and message in err and len(err.strip().splitlines()) == 1


def test_demo_keys_are_served_beyond_loopback_only_when_allowed():
    demo, own = load_serve_config(None), serve_config_from_dict(tomllib.loads(TEST_CONFIG.replace("key-bob", "k-b")))
    for address in ("127.0.0.1", "127.8.9.10", "::1"):
        check_demo_keys(demo, address, address, allowed=False)
    check_demo_keys(demo, "0.0.0.0", "0.0.0.0", allowed=True)
    with pytest.raises(ConfigError, match=r"--host: myhost is not a loopback address.*\(key-alice\)"):
        check_demo_keys(own, "192.0.2.7", "myhost", allowed=False)
    check_demo_keys(serve_config_from_dict(tomllib.loads(OWN_KEYS)), "0.0.0.0", "0.0.0.0", allowed=False)


OWN_KEYS = TEST_CONFIG.replace('"key-alice" = "alice", "key-bob" = "bob"', '"sk-alice-7f3a" = "alice"')


@pytest.mark.parametrize("key,shown", [("sk-d0123456789abcdefab12", "sk-d…ab12"), ("key-alice", "ke…ce"),
                                       ("abcdefg", "a…g"), ("abc", "…")])
def test_the_banner_masks_every_key(key, shown):
    assert mask(key) == shown
    table = tomllib.loads(TEST_CONFIG)
    table["serve"] = {"api_keys": {key: "alice"}, "metrics_key": key + "-metrics"}
    text = banner(serve_config_from_dict(table), "http://127.0.0.1:1", 1.0)
    assert f"{shown} (alice)" in text and key not in text and "/metrics: key " in text


def test_a_missing_serve_extra_names_the_readmes_install_command(monkeypatch, capsys):
    import scheduler.runtime

    monkeypatch.delattr(scheduler.runtime, "serving", raising=False)
    monkeypatch.setitem(sys.modules, "scheduler.runtime.serving", None)  # import fails as without the extra
    assert main(["serve"]) == 2
    assert "pip install -e '.[serve]'" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "kind"), sorted(SERVE_SCHEMA.items()))
def test_a_wrong_type_at_any_serve_key_is_named(key, kind):
    @settings(max_examples=10, database=None)
    @given(wrong_values(kind))
    def check(value):
        table = tomllib.loads(TEST_CONFIG)
        table["serve"][key] = value
        with pytest.raises(ConfigError) as err:
            serve_config_from_dict(table)
        assert str(err.value).startswith(f"serve.{key}") and "\n" not in str(err.value)

    check()
