"""SQL of recipients, preferences and the HTTP inbox (SPEC 12). Every statement is built once, at import;
callers pass values as bind parameters, named `b_<column>` (SQLAlchemy reserves the bare column names in
INSERT and UPDATE statements)."""

from __future__ import annotations

from itertools import product

from sqlalchemy import Select, Text, and_, any_, bindparam, column, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import ARRAY, UUID, distinct_on, insert

from tocsin.db import tables as t

P = t.preferences
RC = t.recipients
D = t.deliveries
R = t.workflow_runs
WD = t.workflow_definitions
IN_APP = "in_app"

# --- preferences ------------------------------------------------------------------------------------------

PREFERENCE_ROWS = (
    select(P)
    .where(P.c.tenant_id == bindparam("b_tenant_id"), P.c.recipient == bindparam("b_recipient"))
    .order_by(P.c.workflow_key.nulls_first(), P.c.channel.nulls_first())
)

# The rows that could decide one (workflow, channel) send: at most four.
MATCHING_PREFERENCES = select(P).where(
    P.c.tenant_id == bindparam("b_tenant_id"),
    P.c.recipient == bindparam("b_recipient"),
    or_(P.c.workflow_key.is_(None), P.c.workflow_key == bindparam("b_workflow_key")),
    or_(P.c.channel.is_(None), P.c.channel == bindparam("b_channel")),
)

_upsert_preference = insert(P).values(
    tenant_id=bindparam("b_tenant_id"),
    recipient=bindparam("b_recipient"),
    workflow_key=bindparam("b_workflow_key"),
    channel=bindparam("b_channel"),
    opted_in=bindparam("b_opted_in"),
    updated_at=bindparam("now"),
)
# The unique index treats NULLs as equal, so ON CONFLICT finds the row of an "any" scope too.
UPSERT_PREFERENCE = _upsert_preference.on_conflict_do_update(
    index_elements=[P.c.tenant_id, P.c.recipient, P.c.workflow_key, P.c.channel],
    set_={"opted_in": _upsert_preference.excluded.opted_in, "updated_at": _upsert_preference.excluded.updated_at},
)

# The spec of each workflow key's latest version: its steps name the channels it uses.
LATEST_SPECS = select(WD.c.key, WD.c.spec).ext(distinct_on(WD.c.key)).order_by(WD.c.key, WD.c.version.desc())

# --- recipients -------------------------------------------------------------------------------------------

_upsert_recipient = insert(RC).values(
    tenant_id=bindparam("b_tenant_id"),
    recipient=bindparam("b_recipient"),
    timezone=bindparam("b_timezone"),
    updated_at=bindparam("now"),
)
UPSERT_RECIPIENT = _upsert_recipient.on_conflict_do_update(
    index_elements=[RC.c.tenant_id, RC.c.recipient],
    set_={"timezone": _upsert_recipient.excluded.timezone, "updated_at": _upsert_recipient.excluded.updated_at},
).returning(*RC.c)

RECIPIENT_TIMEZONE = select(RC.c.timezone).where(
    RC.c.tenant_id == bindparam("b_tenant_id"), RC.c.recipient == bindparam("b_recipient")
)
# The zones of many recipients at once (the due sweep's batch): (tenant, recipient) pairs as two arrays, also
# named as `= ANY(...)` so that the primary key finds them (the planner cannot see what unnest() yields).
_TENANT_IDS = bindparam("b_tenant_ids", type_=ARRAY(Text))
_RECIPIENTS = bindparam("b_recipients", type_=ARRAY(Text))
_pairs = (
    func.unnest(_TENANT_IDS, _RECIPIENTS)
    .table_valued(column("tenant_id", Text), column("recipient", Text))
    .render_derived(name="u")
)
RECIPIENT_TIMEZONES = (
    select(RC.c.tenant_id, RC.c.recipient, RC.c.timezone)
    .join(_pairs, (RC.c.tenant_id == _pairs.c.tenant_id) & (RC.c.recipient == _pairs.c.recipient))
    .where(RC.c.tenant_id == any_(_TENANT_IDS), RC.c.recipient == any_(_RECIPIENTS))
)

# --- the inbox --------------------------------------------------------------------------------------------

ITEM_COLUMNS = (
    D.c.id,
    D.c.run_id,
    D.c.step_key,
    R.c.workflow_key,
    D.c.content,
    D.c.created_at,
    D.c.seen_at,
    D.c.read_at,
    D.c.archived_at,
)

# An inbox item: an in-app delivery of this recipient that succeeded.
_is_item = and_(
    D.c.tenant_id == bindparam("b_tenant_id"),
    D.c.recipient == bindparam("b_recipient"),
    D.c.channel == IN_APP,
    D.c.status == "succeeded",
)


def _items() -> Select[tuple[object, ...]]:
    return select(*ITEM_COLUMNS).join(R, R.c.id == D.c.run_id).where(_is_item)


ITEM = _items().where(D.c.id == bindparam("b_id"))


def _page(unread: bool | None, archived: bool, after: bool) -> Select[tuple[object, ...]]:
    query = _items().where(D.c.archived_at.is_not(None) if archived else D.c.archived_at.is_(None))
    if unread is not None:
        query = query.where(D.c.read_at.is_(None) if unread else D.c.read_at.is_not(None))
    if after:
        # Keyset: strictly older than the last item of the previous page, in the same total order.
        query = query.where(tuple_(D.c.created_at, D.c.id) < tuple_(bindparam("after_created"), bindparam("after_id")))
    return query.order_by(D.c.created_at.desc(), D.c.id.desc()).limit(bindparam("limit"))


# One prepared shape per filter combination (unread: None/True/False x archived x has a cursor).
INBOX_PAGES = {
    (unread, archived, after): _page(unread, archived, after)
    for unread, archived, after in product((None, True, False), (False, True), (False, True))
}

COUNTS = select(
    func.count().filter(D.c.read_at.is_(None)).label("unread_count"),
    func.count().filter(D.c.seen_at.is_(None)).label("unseen_count"),
).where(_is_item, D.c.archived_at.is_(None))

ARCHIVE = (
    update(D)
    .where(_is_item, D.c.id == bindparam("b_id"), D.c.archived_at.is_(None))
    .values(archived_at=bindparam("now"), updated_at=bindparam("now"))
    .returning(D.c.id)
)

_unread = and_(_is_item, D.c.read_at.is_(None), D.c.archived_at.is_(None))
# read-all takes the locks in the order every decision does (runs, then deliveries), so it never
# deadlocks with a run being progressed.
LOCK_UNREAD_RUNS = (
    select(R.c.id).where(R.c.id.in_(select(D.c.run_id).where(_unread))).order_by(R.c.id).with_for_update()
)
# Under those run locks a second read-all waits, then re-checks `read_at IS NULL` and stamps nothing twice.
# Only the runs locked above: an item that arrived in between (its run unlocked) is left for the next read-all,
# so no delivery is ever locked before its run.
STAMP_UNREAD = (
    update(D)
    .where(_unread, D.c.run_id == any_(bindparam("b_run_ids", type_=ARRAY(UUID(as_uuid=True)))))
    .values(read_at=bindparam("now"), updated_at=bindparam("now"))
    .returning(D.c.id, D.c.run_id)
)

__all__ = [
    "ARCHIVE",
    "COUNTS",
    "INBOX_PAGES",
    "ITEM",
    "LATEST_SPECS",
    "LOCK_UNREAD_RUNS",
    "MATCHING_PREFERENCES",
    "PREFERENCE_ROWS",
    "RECIPIENT_TIMEZONE",
    "RECIPIENT_TIMEZONES",
    "STAMP_UNREAD",
    "UPSERT_PREFERENCE",
    "UPSERT_RECIPIENT",
]
