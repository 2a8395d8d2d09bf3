"""Operating the real service: SIGTERM with open SSE streams, the importable app factory under
plain uvicorn, ``northstar serve --workers``.

Each test starts real processes on a fresh lab data dir and a free loopback port, writes their
output to a file (50 streams' worth of logs must not fill a pipe nobody reads), and stops them
by PID.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.reliability_support import NORTHSTAR, clean_env, free_port

SHUTDOWN_COMMENT = ": server shutting down; reconnect with Last-Event-ID"
STREAMS = 50


class Process:
    """A server process, its output in a file."""

    def __init__(self, argv: list[str], workdir: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"server-{port}.log"
        self._out = self.log.open("w")
        self.proc = subprocess.Popen(
            argv, cwd=workdir, env=env or clean_env(), stdout=self._out, stderr=subprocess.STDOUT
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server did not become healthy:\n{self.output()}")

    def terminate(self, timeout: float = 20) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()


def token(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        [*NORTHSTAR, "token", *args], cwd=workdir, env=clean_env(), capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def post(url: str, auth: dict[str, str], thread: str, content: str) -> dict[str, object]:
    body = {"role": "user", "content": content, "idempotency_key": content}
    r = httpx.post(f"{url}/chat/threads/{thread}/messages", json=body, headers=auth, timeout=30)
    assert r.status_code in (200, 201), r.text
    result: dict[str, object] = r.json()
    return result


class Stream:
    """One SSE subscriber: every line it received, and when and how its stream ended."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.ids: list[str] = []
        self.opened = asyncio.Event()  # the opening comment arrived: the stream follows the head
        self.live = asyncio.Event()  # the first event arrived
        self.ended_at: float | None = None
        self.error: BaseException | None = None

    async def follow(self, http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        try:
            async with http.stream("GET", path, headers=headers) as response:
                assert response.status_code == 200
                frame_id, has_data = "", False
                async for line in response.aiter_lines():
                    self.lines.append(line)
                    if line == ": open":
                        self.opened.set()
                    elif line.startswith("id:"):
                        frame_id = line[3:].strip()
                    elif line.startswith("data:"):
                        has_data = True
                    elif line == "":
                        # events only: the opening frame carries the start position, no data
                        if has_data:
                            self.ids.append(frame_id)
                            self.live.set()
                        frame_id, has_data = "", False
        except BaseException as exc:  # recorded: the test asserts there is none
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.opened.set()
            self.live.set()


def assert_clean_log(text: str) -> None:
    assert "Traceback" not in text, text
    assert "ERROR" not in text, text
    assert "Cancel " not in text, text  # uvicorn's "Cancel N running task(s)" after its timeout


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    return tmp_path


async def test_sigterm_ends_every_sse_stream_cleanly_and_exits_0(lab_dir: Path) -> None:
    port = free_port()
    server = Process([*NORTHSTAR, "serve", "--port", str(port)], lab_dir, port)
    try:
        server.wait_healthy()
        auth = {"Authorization": f"Bearer {token(lab_dir)}"}
        limits = httpx.Limits(max_connections=STREAMS + 10)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=30) as http:
            streams = [Stream() for _ in range(STREAMS)]
            tasks = [asyncio.create_task(s.follow(http, "/sse/chat/shutdown", auth)) for s in streams]
            await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), 60)
            first = await asyncio.to_thread(post, server.url, auth, "shutdown", "m1")
            await asyncio.wait_for(asyncio.gather(*(s.live.wait() for s in streams)), 60)
            assert all(s.ids == [first["cursor"]] for s in streams)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
        for s in streams:
            assert s.error is None, repr(s.error)
            assert s.ended_at is not None and s.ended_at - signalled < 1.0, s.ended_at - signalled
            # the last frame is a comment: no id after the last event delivered
            assert [line for line in s.lines if line][-1] == SHUTDOWN_COMMENT
            assert s.ids == [first["cursor"]]
        assert server.proc.wait(timeout=20) == 0
        assert_clean_log(server.output())
    finally:
        server.kill()

    # The client resumes where it was, on the restarted service: nothing skipped.
    server = Process([*NORTHSTAR, "serve", "--port", str(port)], lab_dir, port)
    try:
        server.wait_healthy()
        second = post(server.url, auth, "shutdown", "m2")
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            resumed = Stream()
            headers = {**auth, "Last-Event-ID": str(first["cursor"])}
            task = asyncio.create_task(resumed.follow(http, "/sse/chat/shutdown", headers))
            await asyncio.wait_for(resumed.live.wait(), 30)
            task.cancel()
        assert resumed.ids[0] == second["cursor"]
    finally:
        server.kill()


async def test_the_app_factory_runs_under_plain_uvicorn(lab_dir: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory", "northstar_http.asgi:create_app",
            "--host", "127.0.0.1", "--port", str(port)]
    data = lab_dir / "data"
    server = Process(argv, lab_dir, port, clean_env(NORTHSTAR_DATA_DIR=str(data)))
    try:
        server.wait_healthy()
        auth = {"Authorization": f"Bearer {token(lab_dir, '--data-dir', str(data))}"}
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert (await http.get("/readyz")).json() == {"status": "ready"}
            stream = Stream()
            task = asyncio.create_task(stream.follow(http, "/sse/chat/factory", auth))
            await asyncio.wait_for(stream.opened.wait(), 30)
            first = await asyncio.to_thread(post, server.url, auth, "factory", "f1")
            await asyncio.wait_for(stream.live.wait(), 30)
            signalled = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(task, 10)
        # uvicorn's own default is to wait for open responses for ever: the app ends them
        assert stream.error is None and stream.ids == [first["cursor"]]
        assert stream.ended_at is not None and stream.ended_at - signalled < 1.0
        assert [line for line in stream.lines if line][-1] == SHUTDOWN_COMMENT
        server.proc.wait(timeout=20)  # uvicorn re-raises the signal: status -15 is its normal exit
        assert_clean_log(server.output())
    finally:
        server.kill()


SAAS_ON_SQLITE = {
    "NORTHSTAR_MODE": "saas",
    "NORTHSTAR_CURSOR_SECRET": "c" * 32,
    "NORTHSTAR_JWT_HS256_SECRET": "s" * 32,
    "NORTHSTAR_JWT_AUDIENCE": "northstar",
    "NORTHSTAR_CONNECTIONS": '{"local": {"backend": "sqlite", "path": "reg.db"}}',
    "NORTHSTAR_REGISTRY_CONNECTION": "local",
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NORTHSTAR_PORT": "1"}, "northstar: configuration: unknown environment variable NORTHSTAR_PORT"),
        (SAAS_ON_SQLITE, "northstar: refusing to start in mode 'saas'"),
    ],
)
def test_the_app_factory_refuses_what_serve_refuses_in_one_line(
    lab_dir: Path, env: dict[str, str], message: str
) -> None:
    argv = [sys.executable, "-m", "uvicorn", "--factory", "northstar_http.asgi:create_app",
            "--port", str(free_port())]
    result = subprocess.run(
        argv, cwd=lab_dir, env=clean_env(**env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3  # uvicorn's "failed to start": supervisors do not restart it
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def head_deadline_answer(port: int) -> bytes:
    """What the server answers a request head that never completes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and nothing more
        return sock.recv(4096)


async def test_serve_with_two_workers(lab_dir: Path) -> None:
    port = free_port()
    argv = [*NORTHSTAR, "serve", "--port", str(port), "--workers", "2"]
    server = Process(argv, lab_dir, port, clean_env(NORTHSTAR_HTTP_HEADER_TIMEOUT_SECONDS="1"))
    try:
        server.wait_healthy()
        # the workers run northstar's protocols: a head that never completes gets its 408
        for _ in range(4):  # whichever worker accepts the connection
            assert head_deadline_answer(port).startswith(b"HTTP/1.1 408")
        auth = {"Authorization": f"Bearer {token(lab_dir)}"}
        posted = [post(server.url, auth, "workers", f"w{i}") for i in range(10)]
        assert [p["seq"] for p in posted] == list(range(1, 11))  # one stream, whichever worker wrote
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            answers = await asyncio.gather(*(http.get("/healthz") for _ in range(20)))
            assert {r.status_code for r in answers} == {200}
            stream = Stream()
            task = asyncio.create_task(stream.follow(http, "/sse/chat/workers", auth))
            await asyncio.wait_for(stream.opened.wait(), 30)
            server.proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(task, 10)
        assert stream.error is None and [line for line in stream.lines if line][-1] == SHUTDOWN_COMMENT
        assert server.proc.wait(timeout=30) == 0
        output = server.output()
        assert "LAB MODE" in output and output.count("Started server process") == 2
        assert "Traceback" not in output and "ERROR" not in output
    finally:
        server.kill()
