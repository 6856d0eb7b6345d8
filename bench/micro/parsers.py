"""Why httptools and websockets: parse costs of the candidates, per request / frame.

    .venv/bin/python bench/micro/parsers.py

Candidates that are installed are measured; the others are reported as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

REQUEST = (
    b"POST /socket.io/?EIO=4&transport=polling&t=PaBc123&sid=AbCdEfGhIjKlMnOpQrSt HTTP/1.1\r\n"
    b"Host: 127.0.0.1:3000\r\nUser-Agent: bench\r\nAccept: */*\r\n"
    b"Content-Type: text/plain;charset=UTF-8\r\nOrigin: http://127.0.0.1:3000\r\n"
    b"Content-Length: 38\r\nConnection: keep-alive\r\n\r\n"
    b'42["msg","room-7",{"t":1,"pad":"xxxx"}]'[:38]
)
PAYLOAD = b'42["msg","room-7",{"t":1234567890123.456,"pad":"' + b"x" * 70 + b'"}]'


def timeit(fn: Callable[[], object], n: int = 50_000) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def http_candidates() -> None:
    import httptools

    class P:
        def on_url(self, url: bytes) -> None:
            pass

        def on_header(self, name: bytes, value: bytes) -> None:
            pass

        def on_body(self, body: bytes) -> None:
            pass

    def ht() -> None:
        httptools.HttpRequestParser(P()).feed_data(REQUEST)

    print(f"| httptools 0.9 | {timeit(ht):.2f} us per request |")
    try:
        import h11
    except ImportError:
        print("| h11 | not installed |")
        return

    def h() -> None:
        c = h11.Connection(h11.SERVER)
        c.receive_data(REQUEST)
        while True:
            ev = c.next_event()
            if ev is h11.NEED_DATA or isinstance(ev, h11.EndOfMessage):
                break

    print(f"| h11 {h11.__version__} | {timeit(h):.2f} us per request |")


def ws_candidates() -> None:
    from websockets.frames import Frame, Opcode
    from websockets.protocol import Protocol, Side

    data = Frame(Opcode.TEXT, PAYLOAD).serialize(mask=True)
    proto = Protocol(Side.SERVER, max_size=1_000_000)

    def ws() -> None:
        proto.receive_data(data)
        proto.events_received()

    print(f"| websockets 17.4 sans-I/O Protocol | {timeit(ws):.2f} us per frame (parse) |")
    out = Frame(Opcode.TEXT, PAYLOAD)
    print(
        f"| websockets 17.4 Frame.serialize | {timeit(lambda: out.serialize(mask=False)):.2f} us per frame (server) |"
    )
    try:
        import wsproto
        from wsproto.connection import Connection, ConnectionType
    except ImportError:
        print("| wsproto | not installed |")
        return
    conn = Connection(ConnectionType.SERVER)

    def wsp() -> None:
        conn.receive_data(data)
        list(conn.events())

    print(f"| wsproto {wsproto.__version__} | {timeit(wsp):.2f} us per frame (parse) |")


if __name__ == "__main__":
    print("| parser | cost |\n|---|---|")
    http_candidates()
    ws_candidates()
