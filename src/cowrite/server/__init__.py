"""The asyncio adapter: sockets, HTTP, WebSocket and long-polling transports, timers."""

from cowrite.server.engine import EngineServer
from cowrite.server.http import HttpServer
from cowrite.server.socketio import SocketServer

__all__ = ["EngineServer", "HttpServer", "SocketServer"]
