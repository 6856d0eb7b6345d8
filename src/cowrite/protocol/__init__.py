"""Sans-I/O Engine.IO v4 and Socket.IO v5: codecs and session state machines.

Nothing in this package does I/O, uses asyncio or reads a clock.
"""
