"""Out of file descriptors: existing connections keep working, accepting pauses
(counted), and resumes by itself once descriptors are free again."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap

import pytest

SERVER = textwrap.dedent(
    """
    import asyncio, json, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    from cowrite.config import ServerSettings
    from cowrite.server import SocketServer
    from cowrite import runtime

    async def main():
        sio = SocketServer(ServerSettings(port=0, max_connections=10_000))
        await sio.start()
        print(json.dumps({"port": sio.port}), flush=True)
        while await asyncio.to_thread(sys.stdin.readline):
            print(json.dumps({"pauses": sio.engine.accept_pauses,
                              "connections": len(sio.engine.connections)}), flush=True)
        await sio.stop(timeout=1)

    runtime.run(main(), use_uvloop=sys.argv[1] == "uvloop")
    """
)


def request(sock: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 request on a kept-alive socket; returns the whole response."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body


def poll(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
        return s.recv(64)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_emfile_pauses_and_resumes(loop: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, loop,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    try:
        port = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))["port"]
        keep = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert request(keep, "/socket.io/?EIO=4&transport=polling").startswith(b"HTTP/1.1 200")
        hogs = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
        await asyncio.sleep(1.0)
        proc.stdin.write(b"?\n")
        state = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        assert state["pauses"] >= 1
        # The connection made before the shortage still works.
        assert request(keep, "/nothing-here").startswith(b"HTTP/1.1 404")
        for h in hogs:
            h.close()
        await asyncio.sleep(1.5)
        assert poll(port).startswith(b"HTTP/1.1 200")  # accepting again, by itself
        keep.close()
    finally:
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
