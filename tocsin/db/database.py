"""`Database`: the handle every engine function takes: an async connection pool, migrations, a definition cache."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

import asyncpg
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from tocsin.core.definitions import WorkflowDefinition
from tocsin.db import queries as q

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number: serializes concurrent `migrate()` calls from several workers.
MIGRATION_LOCK = 0x70C5_1E00

STATEMENT_TIMEOUT_SECONDS = 30.0
"""The longest any one statement of the engine may take, lock waits included (Postgres' statement_timeout).
Its statements take milliseconds and no lock is held across a provider call: 30 s means something is wrong."""
CLIENT_TIMEOUT_MARGIN_SECONDS = 5.0
"""How much longer the client waits (asyncpg's command_timeout) than the server: Postgres cancels first and the
connection stays usable; the client's own timeout only fires when the server does not answer at all."""
IDLE_IN_TRANSACTION_FACTOR = 2
"""A session left inside a transaction for this many statement timeouts without a statement is a client that
died or hung holding locks: Postgres ends it (idle_in_transaction_session_timeout), freeing the rows it held.
No transaction of tocsin waits on anything but Postgres (never on a provider)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""Opening a connection, unless the URL's connect_timeout says otherwise."""

# libpq URL parameters that asyncpg reads from a DSN itself (with libpq's meaning): handed to it as a DSN.
_DSN_PARAMETERS = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslcrl",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "passfile",
    }
)
# libpq parameters that are session settings sent at startup (`options` carries `-c name=value` flags).
_STARTUP_PARAMETERS = frozenset({"application_name", "options"})
# Where the server is: SQLAlchemy reads these from the query itself (Unix sockets, several hosts).
_ADDRESS_PARAMETERS = frozenset({"host", "port"})
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
URL_PARAMETERS = _DSN_PARAMETERS | _STARTUP_PARAMETERS | _ADDRESS_PARAMETERS | {"connect_timeout"}
"""The query parameters a database URL may carry; any other is refused by name."""

# SQLSTATE class 08 (connection exception) and these of class 57: the session is gone, not the statement.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})


@dataclass(frozen=True)
class ConnectOptions:
    """A database URL split into what SQLAlchemy takes (`url`) and what asyncpg's connect takes."""

    url: URL
    dsn: str | None = None
    timeout: float = CONNECT_TIMEOUT_SECONDS
    server_settings: dict[str, str] = field(default_factory=dict)

    def connect_args(self, *, statement_timeout: float | None) -> dict[str, Any]:
        settings = dict(self.server_settings)
        args: dict[str, Any] = {"timeout": self.timeout}
        if statement_timeout is not None:
            settings.setdefault("statement_timeout", f"{round(statement_timeout * 1000)}ms")
            settings.setdefault(
                "idle_in_transaction_session_timeout",
                f"{round(statement_timeout * IDLE_IN_TRANSACTION_FACTOR * 1000)}ms",
            )
            args["command_timeout"] = statement_timeout + CLIENT_TIMEOUT_MARGIN_SECONDS
        if settings:
            args["server_settings"] = settings
        if self.dsn is not None:
            args["dsn"] = self.dsn
        return args


def connect_options(url: str) -> ConnectOptions:
    """Accept plain `postgresql://` URLs as libpq tools print them, with libpq's query parameters.

    SQLAlchemy would hand every query parameter to asyncpg's connect as a keyword (a TypeError for
    `?sslmode=disable`): the SSL and session parameters asyncpg knows go to it as a DSN, `application_name`
    and `options` as startup settings, `connect_timeout` as its timeout; any other is a ValueError naming it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"not a database URL: {exc}") from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"tocsin needs a PostgreSQL URL (postgresql://...), got {parsed.drivername!r}")
    unknown = sorted(set(parsed.query) - URL_PARAMETERS)
    if unknown:
        names = ", ".join(unknown)
        raise ValueError(f"unsupported database URL parameter{'s' if len(unknown) > 1 else ''}: {names}")
    single: dict[str, str] = {}
    for name, value in parsed.query.items():
        if name in _ADDRESS_PARAMETERS:
            continue
        if not isinstance(value, str):
            raise ValueError(f"the database URL parameter {name} is given more than once")
        single[name] = value
    sslmode = single.get("sslmode")
    if sslmode is not None and sslmode not in _SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(_SSL_MODES)}, not {sslmode!r}")
    timeout = CONNECT_TIMEOUT_SECONDS
    if "connect_timeout" in single:
        timeout = _connect_timeout(single["connect_timeout"])
    dsn_query = {name: value for name, value in single.items() if name in _DSN_PARAMETERS}
    return ConnectOptions(
        url=parsed.difference_update_query(set(parsed.query) - _ADDRESS_PARAMETERS),
        dsn=f"postgresql://?{urlencode(dsn_query)}" if dsn_query else None,
        timeout=timeout,
        server_settings={name: value for name, value in single.items() if name in _STARTUP_PARAMETERS},
    )


def _connect_timeout(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"connect_timeout must be a number of seconds, not {text!r}") from None
    # libpq: zero (or less) means wait for ever, which is exactly what no call may do.
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"connect_timeout must be a positive number of seconds, not {text!r}")
    return seconds


def async_url(url: str) -> str:
    """The URL SQLAlchemy connects with (the asyncpg driver, no libpq parameters); ValueError if unusable."""
    return connect_options(url).url.render_as_string(hide_password=False)


def session_lost(error: BaseException) -> bool:
    """Whether the connection an operation failed on can never be used again and must leave the pool.

    asyncpg's own errors (a state error such as "cannot switch to state N; another operation is in
    progress", "connection was closed in the middle of operation") mean its protocol is out of step with the
    server; a client-side timeout leaves a query whose answer may still come; Postgres' session-ending
    errors (class 08, an administrator's pg_terminate_backend, a shutdown) end the backend. A statement
    Postgres cancelled (statement_timeout, 57014) or refused leaves the session as good as it was.
    """
    # OSError: a socket error, and asyncpg's command timeout (TimeoutError is an OSError).
    if isinstance(error, asyncpg.InterfaceError | asyncpg.InternalClientError | OSError):
        return True
    if isinstance(error, asyncpg.PostgresError):
        sqlstate = str(error.sqlstate or "")
        return sqlstate.startswith("08") or sqlstate in _SESSION_ENDED
    return False


def _invalidate_lost_sessions(context: ExceptionContext) -> None:
    error = context.original_exception
    # SQLAlchemy wraps asyncpg's exception in its DBAPI adapter's: the asyncpg one is its cause.
    cause = error.__cause__ if error.__cause__ is not None else error
    if session_lost(cause) or session_lost(error):
        context.is_disconnect = True
        # One backend ended (a terminated session) says nothing of the others: each is checked by its next BEGIN.
        context.invalidate_pool_on_disconnect = False


def driver_of(conn: AsyncConnection) -> Any:
    """The asyncpg connection under `conn`, or None if it has none now (invalidated: SQLAlchemy must reconnect).
    Read without AsyncConnection.get_raw_connection's greenlet hop: a valid connection needs no I/O for it."""
    sync = conn.sync_connection
    if sync is None or sync.invalidated:
        return None
    return sync.connection.driver_connection


async def driver_failed(
    conn: AsyncConnection, error: BaseException, statement: str | None = None, parameters: Sequence[Any] = ()
) -> BaseException:
    """What to raise for an error asyncpg raised on `conn` outside SQLAlchemy's execute (Database.transaction's
    BEGIN and COMMIT, tocsin.db.store's statements): the same as SQLAlchemy would. A lost session (or an
    interrupted operation, which leaves the protocol out of step) invalidates the connection, so the pool never
    hands it out again; asyncpg's own errors become SQLAlchemy's DBAPIError subclasses (IntegrityError, ...)
    with `connection_invalidated` set; anything else (a client timeout, a cancellation) is raised as it is."""
    lost = session_lost(error) or not isinstance(error, Exception)
    if lost and not conn.invalidated:
        await conn.invalidate()
    dbapi = conn.dialect.loaded_dbapi
    # The asyncpg exception -> DBAPI exception table of SQLAlchemy's asyncpg dialect, most specific first.
    for kind in type(error).__mro__:
        adapted = dbapi._asyncpg_error_translate.get(kind)
        if adapted is not None:
            orig = adapted(error.args[0] if error.args else str(error), error)
            orig.__cause__ = error
            wrapped: BaseException = DBAPIError.instance(
                statement, list(parameters), orig, dbapi.Error, connection_invalidated=lost, dialect=conn.dialect
            )
            wrapped.__cause__ = orig
            return wrapped
    return error


def alembic_config(connection: Connection | None = None) -> Config:
    # alembic is imported to migrate, not with the database layer: a worker never migrates, and alembic is ~13 MB
    # of a worker's RSS (bench/RESULTS.md, "Issue 14 goal 4").
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


class Database:
    """A pool of connections to the tocsin schema; safe to share between many concurrent tasks."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # Database.transaction's connections: asyncpg runs their transaction, SQLAlchemy sends no BEGIN of its own.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # A pool full of dead sessions (a restarted server) is tried through, then a new connection.
        pool = engine.sync_engine.pool
        self._begin_attempts = (pool.size() if isinstance(pool, QueuePool) else 0) + 2
        # Definitions are immutable once registered, so a parsed copy never goes stale.
        self._definitions: dict[uuid.UUID, WorkflowDefinition] = {}
        self._options: ConnectOptions | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        pool_size: int = 10,
        max_overflow: int = 10,
        statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
        pool_timeout: float = 30.0,
    ) -> Database:
        """Open a pool on `url`. No call waits for ever: connecting is bounded by the URL's connect_timeout
        (else CONNECT_TIMEOUT_SECONDS), a statement by `statement_timeout`, a wait for a free connection by
        `pool_timeout`. A connection whose operation failed half-way is dropped, never handed out again; so is one
        whose session ended while it sat in the pool, found by the transaction's BEGIN (no pre-ping round trip)."""
        options = connect_options(url)
        engine = create_async_engine(
            options.url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_args=options.connect_args(statement_timeout=statement_timeout),
        )
        event.listen(engine.sync_engine, "handle_error", _invalidate_lost_sessions)
        db = cls(engine)
        db._options = options
        try:
            async with engine.connect() as conn:
                await conn.execute(q.PING)
        except BaseException:
            await engine.dispose()
            raise
        return db

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction: committed when the block ends, rolled back if it raises.

        asyncpg runs it (BEGIN, then COMMIT or ROLLBACK) on a connection SQLAlchemy treats as autocommit, so the
        statements tocsin.db.store sends to the driver itself and any sent through SQLAlchemy share it."""
        conn, transaction = await self._begin()
        try:
            yield conn
        except BaseException:
            try:
                await transaction.rollback()
            except BaseException as failed:
                # The block's error is the one to see; the connection is dropped if its rollback failed.
                await driver_failed(conn, failed)
            await conn.close()
            raise
        try:
            await transaction.commit()
        except BaseException as error:
            failure = await driver_failed(conn, error, "COMMIT")
            await conn.close()
            if failure is error:
                raise
            raise failure from error
        await conn.close()

    async def _begin(self) -> tuple[AsyncConnection, Any]:
        """A pooled connection with a transaction begun on it.

        The BEGIN is the connection's liveness check: it is the transaction's first round trip anyway, and a
        session that ended while it sat in the pool (a terminated backend, a restarted server) fails it before
        anything ran, so the connection is dropped and the next one tried. A pre-ping would cost three more
        round trips per transaction (SQLAlchemy's asyncpg ping is BEGIN; ";"; ROLLBACK)."""
        attempt = 0
        while True:
            attempt += 1
            conn = await self._autocommit.connect()
            try:
                driver = driver_of(conn)
                assert driver is not None  # a connection just checked out is valid
                transaction = driver.transaction()
                await transaction.start()
            except BaseException as error:
                failure = await driver_failed(conn, error, "BEGIN")
                await conn.close()
                # A session found ended is replaced at once; a server that does not answer (a client timeout)
                # is not asked again: the caller sees the timeout, as from any statement.
                ended = session_lost(error) and not isinstance(error, TimeoutError)
                if not ended or attempt >= self._begin_attempts:
                    if failure is error:
                        raise
                    raise failure from error
                continue
            return conn, transaction

    async def migrate(self, revision: str = "head") -> None:
        await self._alembic("upgrade", revision)

    async def downgrade(self, revision: str = "base") -> None:
        await self._alembic("downgrade", revision)

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            if not await conn.scalar(q.VERSION_TABLE_EXISTS):
                return None
            revision: str | None = await conn.scalar(q.CURRENT_REVISION)
            return revision

    async def _alembic(self, action: Literal["upgrade", "downgrade"], revision: str) -> None:
        from alembic import command

        def run(sync_conn: Connection) -> None:
            sync_conn.execute(q.TAKE_MIGRATION_LOCK, {"key": MIGRATION_LOCK})
            getattr(command, action)(alembic_config(sync_conn), revision)

        # A migration may rewrite a large table: it runs on a connection of its own without the statement
        # timeouts (and waits for another host's migration on the lock as long as that takes).
        engine = self.engine
        if self._options is not None:
            engine = create_async_engine(
                self._options.url, poolclass=NullPool, connect_args=self._options.connect_args(statement_timeout=None)
            )
        try:
            async with engine.begin() as conn:
                await conn.run_sync(run)
        finally:
            if engine is not self.engine:
                await engine.dispose()

    async def definition(self, definition_id: uuid.UUID, conn: AsyncConnection | None = None) -> WorkflowDefinition:
        """A registered definition, parsed once per process; read on `conn` (or a connection of its own)."""
        cached = self._definitions.get(definition_id)
        if cached is None:
            params = {"definition_id": definition_id}
            if conn is not None:
                spec = await conn.scalar(q.DEFINITION_SPEC, params)
            else:
                async with self.engine.connect() as own:
                    spec = await own.scalar(q.DEFINITION_SPEC, params)
            cached = WorkflowDefinition.model_validate(spec)
            self._definitions[definition_id] = cached
        return cached

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
