"""`fairbatch serve --trace`: the server records the timeline trace while it serves and writes it,
atomically, when it stops; bad paths and bounds are refused before it starts."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client import CollectorRegistry
from server_helpers import client, config

from benchmarks.main import main
from scheduler.errors import ConfigError
from scheduler.runtime.serving import listen, serve
from scheduler.runtime.trace_file import FirstRequests, TraceFile, write_atomically
from scheduler.trace import TraceRecorder
from sim.serve import DEFAULT_TRACE_WINDOW, service

BODY = {"prompt": "Say hello", "max_tokens": 4}


async def serve_requests(trace: TraceFile, count: int, stop_by_cancelling: bool) -> list[str]:
    """Serve `count` completions with the trace on, then stop (by the shutdown trigger, as a
    signal does, or by cancelling); the ids of the requests."""
    stop = anyio.Event()
    async with anyio.create_task_group() as task_group:
        served = service(config(), 0.0, trace)
        url, _ = await task_group.start(partial(serve, served, listen("127.0.0.1", 0), registry=CollectorRegistry(),
                                                shutdown=stop.wait))
        async with client(url) as http:
            ids = [(await http.post("/v1/completions", json=BODY)).json()["id"] for _ in range(count)]
        if stop_by_cancelling:
            task_group.cancel_scope.cancel()
        else:
            stop.set()
    return ids


def trace_events(path: Path) -> list[dict]:
    return json.loads(path.read_text())["traceEvents"]


def flow(events: list[dict], rid: str) -> list[str]:
    return [e["ph"] for e in events if e.get("cat") == "flow" and e["id"] == rid]


@pytest.mark.anyio
@pytest.mark.parametrize("stop_by_cancelling", [False, True], ids=["shutdown", "cancelled"])
async def test_a_server_writes_its_trace_when_it_stops(tmp_path, stop_by_cancelling):
    path = tmp_path / "serve.trace.json"
    ids = await serve_requests(TraceFile(path, DEFAULT_TRACE_WINDOW), 2, stop_by_cancelling)
    events = trace_events(path)
    steps = [e for e in events if e.get("cat") == "step"]
    assert steps and {e["tid"] for e in steps} <= {0, 1} and all(e["pid"] == 1 for e in steps)
    for rid in ids:
        assert flow(events, rid)[0] == "s" and flow(events, rid)[-1] == "f"  # arrival to finish
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.anyio
async def test_the_first_n_requests_keep_their_flows_and_the_others_only_their_steps(tmp_path):
    path = tmp_path / "serve.trace.json"
    ids = await serve_requests(TraceFile(path, None, requests=2), 4, stop_by_cancelling=False)
    events = trace_events(path)
    assert [bool(flow(events, rid)) for rid in ids] == [True, True, False, False]
    assert sum(e["args"]["tokens"] for e in events if e.get("cat") == "step") >= 4 * BODY["max_tokens"]


@pytest.mark.anyio
async def test_a_window_the_server_never_reaches_keeps_only_the_names(tmp_path):
    path = tmp_path / "serve.trace.json"
    await serve_requests(TraceFile(path, (1e6, 1e6 + 1)), 2, stop_by_cancelling=False)  # seconds of serving
    assert {e["ph"] for e in trace_events(path)} == {"M"}


def test_first_requests_holds_at_most_n_ids():
    first = FirstRequests(2)
    assert ["a" in first, "b" in first, "c" in first, "a" in first, "c" in first] == [True, True, False, True, False]
    assert len(first._kept) == 2


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    path.write_text("earlier")

    def full(*args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", full)
        with pytest.raises(ConfigError, match=re.escape(f"--trace: cannot write {path}: No space left on device")):
            TraceFile(path).write(TraceRecorder(["a"]))
    assert path.read_text() == "earlier" and [p.name for p in tmp_path.iterdir()] == ["t.json"]
    write_atomically(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["t.json"]


@pytest.mark.parametrize("make,path,message", [
    (lambda tmp: None, "missing/t.json", "cannot write {tmp}/missing/t.json: its folder {tmp}/missing does not exist"),
    (lambda tmp: (tmp / "file").write_text(""), "file/t.json", "its folder {tmp}/file is not a folder"),
    (lambda tmp: (tmp / "dir").mkdir(), "dir", "--trace: {tmp}/dir is a directory"),
])
def test_an_unwritable_trace_path_is_refused_before_serving(tmp_path, capsys, make, path, message):
    make(tmp_path)
    assert main(["serve", "--port", "0", "--trace", str(tmp_path / path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fairbatch: error: --trace: ") and message.format(tmp=tmp_path) in err
    assert "allowed: a file path in an existing folder this user may write" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_folder_without_write_permission_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match=re.escape(f"--trace: cannot write {folder}/t.json: Permission denied")):
        TraceFile(folder / "t.json").check()


def test_a_write_the_file_system_refuses_is_refused_before_serving(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)  # as a read-only folder does, even for root
    with pytest.raises(ConfigError, match=re.escape(f"--trace: cannot write {tmp_path}/t.json: Permission denied")):
        TraceFile(tmp_path / "t.json").check()


@pytest.mark.parametrize("argv,message", [
    (["--trace-window", "10"], "--trace-window: must be START:END in seconds (e.g. 10:12), got '10'"),
    (["--trace-window", "5:2"], "--trace-window: must have 0 <= START < END, got '5:2'"),
    (["--trace-requests", "0"], "--trace-requests: must be an integer >= 1 (requests sampled), got 0"),
    (["--trace-requests", "5", "--trace-window", "30:40"],
     "--trace-requests: keeps the first 5 requests from the server's start, so with --trace-window starting at 30 s"),
])
def test_a_bad_trace_bound_is_refused_before_serving(tmp_path, capsys, argv, message):
    assert main(["serve", "--port", "0", "--trace", str(tmp_path / "t.json"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fairbatch: error: {message}") and len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_trace_bound_without_trace_is_refused(capsys):
    assert main(["serve", "--port", "0", "--trace-window", "0:10"]) == 2
    assert "--trace-window: bounds the trace, so it needs --trace PATH" in capsys.readouterr().err


def test_the_command_writes_the_trace_on_sigterm(tmp_path):
    path = tmp_path / "serve.trace.json"
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.main", "serve", "--port", "0", "--speed", "0",
                                "--trace", str(path), "--trace-window", "0:3600"], stderr=subprocess.PIPE, text=True)
    try:
        banner = "".join(process.stderr.readline() for _ in range(3))
        assert f"tracing seconds 0 to 3600 of serving, every request, to {path} at shutdown" in banner
        url = re.search(r"at (http://127\.0\.0\.1:\d+) ", banner).group(1)
        rid = httpx.post(f"{url}/v1/completions", json=BODY, headers={"Authorization": "Bearer key-bob"},
                         timeout=10).json()["id"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert f"wrote {path}" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    events = trace_events(path)
    assert flow(events, rid)[0] == "s" and flow(events, rid)[-1] == "f"
    assert any(e.get("cat") == "step" for e in events)


def test_a_trace_that_cannot_be_written_at_shutdown_is_a_one_line_error(tmp_path):
    folder = tmp_path / "gone"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.main", "serve", "--port", "0", "--speed", "0",
                                "--trace", str(folder / "t.json")], stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(3):
            process.stderr.readline()  # the banner: serving
        folder.rmdir()  # after the check, before the write
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 2
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()
    assert "Traceback" not in err  # what came before: hypercorn's line
    assert err.endswith(f"\nfairbatch: error: --trace: cannot write {folder}/t.json: No such file or directory\n")
