"""`fairbatch serve`: its configuration, its errors, and the command end to end."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tomllib

import httpx
import pytest
from server_helpers import TEST_CONFIG

from scheduler.errors import ConfigError
from sim.cli import main
from sim.serve import load_serve_config, serve_config_from_dict


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
    ({"max_tokens": 0}, "serve.max_tokens: must be an integer >= 1"),
    ({"stream_buffer": "big"}, "serve.stream_buffer: must be an integer"),
    ({"port": 80}, "serve: unknown key 'port'"),
    ({"model": ""}, "serve.model: must be a non-empty string"),
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
])
def test_bad_command_lines_fail_with_one_line_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairbatch: error: ") and message in err and len(err.strip().splitlines()) == 1


def test_the_command_serves_until_interrupted():
    process = subprocess.Popen([sys.executable, "-m", "sim.cli", "serve", "--port", "0", "--speed", "0"],
                               stderr=subprocess.PIPE, text=True)
    try:
        banner = process.stderr.readline() + process.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", banner).group(1)
        assert "key-alice (alice), key-bob (bob)" in banner
        answer = httpx.post(f"{url}/v1/completions", json={"prompt": "hi", "max_tokens": 3},
                            headers={"Authorization": "Bearer key-bob"}, timeout=10).json()
        assert answer["usage"]["completion_tokens"] == 3
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
