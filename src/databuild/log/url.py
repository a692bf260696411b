"""Build Event Log URLs: which backend a URL names, and how to show one safely.

Accepted: ``memory:``, ``sqlite:///relative/path.sqlite``, ``sqlite:////absolute/path``
(four slashes), ``postgresql://...`` or ``postgres://...`` (libpq URL; an extra
``?schema=name`` query parameter picks the schema). ``mask_url`` hides passwords in the
user-info part and in ``password=`` parameters, and every message that shows a URL uses it.

The PostgreSQL backend needs the ``[postgres]`` extra (psycopg); without it, opening a
PostgreSQL URL raises ``missing_postgres_extra()``: an ``InvalidInput`` (a configuration
problem: exit 2 in the CLI) naming the extra to install.

Called by ``databuild.log.open_log`` and by the adapters for their messages. Must not open
connections or files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from databuild.core.errors import InvalidInput, StorageError

ACCEPTED = (
    "memory:, sqlite:///relative/path.sqlite, sqlite:////absolute/path.sqlite, "
    "postgresql://user@host:port/database[?schema=name] (or postgres://)"
)
_PASSWORD_PARAM = re.compile(r"(password=)[^&\s]*", re.IGNORECASE)
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    shown = _PASSWORD_PARAM.sub(r"\1***", url)
    try:
        parts = urlsplit(shown)
        password = parts.password
    except ValueError:
        return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", shown)
    if not password:
        return shown
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True, slots=True)
class PostgresLocation:
    conninfo: str  # the URL without our own query parameters, for libpq
    schema: str


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///`` URL (a leading ``/`` after three slashes: absolute)."""
    path = unquote(url[len("sqlite:///") :])
    if not path or path in (":memory:", "/:memory:"):
        raise StorageError(
            f"SQLite Build Event Log URL {mask_url(url)!r} names no file; use "
            "sqlite:///relative/path.sqlite or sqlite:////absolute/path.sqlite "
            "(memory: for a log that lives in this process only)"
        )
    return path


def checked_schema(schema: str, url: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise StorageError(
            f"PostgreSQL Build Event Log {mask_url(url)!r}: schema {schema!r} must be a plain "
            "identifier (letters, digits, underscores; at most 63; not starting with a digit)"
        )
    return schema


def postgres_location(url: str, schema: str | None = None) -> PostgresLocation:
    """Split our ``schema`` parameter off a PostgreSQL URL; ``schema`` (if given) wins."""
    try:
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
    except ValueError as exc:
        raise StorageError(f"bad PostgreSQL URL {mask_url(url)!r}: {exc}") from None
    from_url = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    chosen = schema or (from_url[-1] if from_url else "public")
    return PostgresLocation(conninfo=conninfo, schema=checked_schema(chosen, url))


def scheme_of(url: str) -> str:
    return url.partition(":")[0] if ":" in url else ""


def unsupported(url: str) -> StorageError:
    scheme = scheme_of(url)
    named = f"scheme {scheme!r}" if scheme else "no scheme"
    return StorageError(
        f"unsupported Build Event Log URL {mask_url(url)!r} ({named}); accepted: {ACCEPTED}"
    )


POSTGRES_EXTRA_HINT = "pip install 'databuild[postgres]'"


def missing_postgres_extra() -> InvalidInput:
    return InvalidInput(
        "the PostgreSQL Build Event Log needs the postgres extra (psycopg), which is not "
        f"installed: {POSTGRES_EXTRA_HINT}"
    )
