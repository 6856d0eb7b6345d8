"""The collaboration domain: documents, roles, the operation pipeline, presence.

core/ talks to its backends (store, presence, broker) only through the
interfaces in ``cowrite.backends``, and to clients only through the
``ClientGateway`` interface that the server adapter implements.
"""
