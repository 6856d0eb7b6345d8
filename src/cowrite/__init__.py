"""cowrite: a real-time collaboration server speaking Socket.IO (Engine.IO v4, Socket.IO v5)."""

__version__ = "0.1.0"
