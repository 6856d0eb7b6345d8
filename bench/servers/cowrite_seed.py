"""Grants (document, user) pairs as editor through cowrite's store interface.

Used by bench/run.py with ``--cowrite-perms store`` before a cowrite server
starts: reads ``document<TAB>user`` lines on stdin, creates each document
(owned by its first user) and gives every user the ``editor`` role.

Usage: python cowrite_seed.py STORE_URL < pairs.tsv
"""

from __future__ import annotations

import asyncio
import sys

from cowrite.app import open_store
from cowrite.backends.store import Role


async def main(url: str, pairs: list[tuple[str, str]]) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.migrate()
        seen: set[str] = set()
        for doc, user in pairs:
            if doc not in seen:
                seen.add(doc)
                if not await store.document_exists(doc):
                    await store.create_document(doc, user)
            await store.set_role(doc, user, Role.EDITOR)
    finally:
        await store.close()


if __name__ == "__main__":
    rows = [tuple(line.split("\t", 1)) for line in sys.stdin.read().splitlines() if line]
    asyncio.run(main(sys.argv[1], [(d, u) for d, u in rows]))
