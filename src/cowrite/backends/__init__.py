"""Backends: one interface module per concern, one module per implementation.

Each interface is a ``typing.Protocol`` whose docstring states its guarantees;
core/ imports interfaces only, and one shared contract suite under
``tests/contract/`` runs against every implementation.

- ``store``: the durable per-document operation log and access table
  (``store_sqlite``, ``store_postgres``).
- ``presence``: who is in which document now (``presence_memory``, ...).

Nothing is imported here, so that importing an interface never pulls in a
database driver.
"""
