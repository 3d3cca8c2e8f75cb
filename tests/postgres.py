"""A real PostgreSQL server for the tests, found or installed, started once per session on a loopback port.

conftest.py imports its fixtures, so each pytest-xdist worker starts one server, whichever files it runs. The
server itself (found or installed, run as the ``postgres`` system user when we are root, on 127.0.0.1 only, with a
password, in a temporary data directory removed at the end) is tests/servers.py's, shared with the benchmarks.
When it cannot start, tests needing it are skipped, except on CI (``CI`` set), where they fail loudly.
"""

from __future__ import annotations

import secrets
import typing as t

import pytest
from servers import POSTGRES_USER as USER
from servers import PostgresServer, serve, start_postgres

__all__ = ["PASSWORD", "USER", "PostgresServer", "postgres_server", "postgres_url"]

PASSWORD = "pg-" + secrets.token_hex(8)  # a secret the tests check never shows


@pytest.fixture(scope="session")
def postgres_server() -> t.Iterator[PostgresServer]:
    """A started PostgreSQL server for the whole session; stopped and removed at its end."""
    server = start_postgres(PASSWORD, max_connections=200)  # room for the tests' many connections
    yield from serve(server, "PostgreSQL")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh database on the session's server, password included."""
    return postgres_server.new_database()
