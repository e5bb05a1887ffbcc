"""One person per email across the writers of ``users``: the email's advisory lock.

``users.email`` is not unique, by design in two cases: a sign-in whose email's domain another organization verified
gets a person of its own (:mod:`services.domains`), and a person a WorkOS user claimed is never handed to another
WorkOS user with the same email (one deleted and invited again, say), who gets a person of its own. Elsewhere an
email names one person, and every writer that may create a person for an email (a sign-in, a directory user's event
or resync page, a WorkOS ``organization_membership`` event, the ``grant-admin`` command) or move an email onto a
person (a directory user's email change, a sign-in whose email WorkOS changed) keeps it so:

    take the email's lock (:func:`hold_email`), then look for its person, and create (or move the email) only if
    none is found.

The lock is held until the transaction ends, so whoever takes it second reads what the first committed. A person
found before the lock may be used as it is (a person is never deleted); only the look that decides to create must
come after it. Without the lock a sign-in and the applier each found no person and each created one, and the
directory's membership and the sign-in's hung on two people (``tests/test_person_email_race.py``).

Lock order: the organization, then members' keys, then emails. The writers that wait for them follow it: a
sign-in key-shares its organization's row, then holds the key of the directory user its membership hangs on
(``sign_in_person.upsert``); the admin paths lock the organization before the member's key
(``last_admin.lock_organization``); a fan-out runs under its organization's row; an applier's batch locks the
organizations whose directory it changes exclusively before any of its events
(``event_source.lock_directory_changes_first``); every writer that will insert a membership passes its
organization, whose row is locked ``FOR KEY SHARE`` before the email (as the membership's foreign key would lock it
later). Each crossing of two orders was a deadlock found by a break-it review, a sign-in its victim (a 503). One
crossing no order removes: an applier holds its events' keys from its claim (never waiting for them) before it
locks their organizations. PostgreSQL rolls back one of the two, and the loser runs again: the batch by its pool,
a sign-in's transaction by ``db_conflicts.retrying``.

On SQLite, whose writers take turns, nothing is locked unless *organization_id* is given: then a no-op write of the
organization's row takes the database's write lock (pysqlite begins a transaction at the first write, so a look
made before any write is outside the turn), as ``last_admin.lock_organization`` does."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.orm import Session

from ..models import Organization

EMAIL_LOCK = text("SELECT pg_advisory_xact_lock(1162693632, hashtext(:email))")
"""An email's lock: the two-key form (class ``0x454D4C00``, "EML"), a lock space apart from the one-key locks of
entity keys (``inbox_claim``, ``fanout_jobs``), which an event's key such as ``email:<address>`` could otherwise
share. Migration 0022's ``directory_user_no_person`` takes the same lock."""

_EMAILS_LOCK = text("SELECT count(pg_advisory_xact_lock(1162693632, hashtext(e))) "
                    "FROM (SELECT unnest(CAST(:emails AS varchar[])) AS e ORDER BY 1) AS emails")
_KEY_SHARE = select(Organization.id).where(Organization.id == bindparam("organization_id")) \
    .with_for_update(read=True, key_share=True)
_SQLITE_TURN = update(Organization).where(Organization.id == bindparam("organization_id")) \
    .values(id=Organization.id, updated_at=Organization.updated_at)  # no column changes (onupdate is not applied)


def locks_emails(session: Session) -> bool:
    """Whether the session's database takes email locks (PostgreSQL)."""
    return session.get_bind().dialect.name == "postgresql"


def hold_organization(session: Session, organization_id: str) -> None:
    """Lock the organization's row ``FOR KEY SHARE`` (PostgreSQL: what a membership's insert would take, blocking
    only an exclusive holder) or, on SQLite, take the database's write turn with a write that changes no column."""
    if locks_emails(session):
        session.execute(_KEY_SHARE, {"organization_id": organization_id})
    else:
        session.execute(_SQLITE_TURN, {"organization_id": organization_id})


def hold_email(session: Session, email: str, *, organization_id: str | None = None) -> bool:
    """Hold *email*'s lock until the transaction ends, after *organization_id*'s row (the module's lock order);
    ``True`` when taken (look for its person again now). ``False`` for no email, and on SQLite without
    *organization_id*."""
    return hold_emails(session, [email], organization_id=organization_id)


def hold_emails(session: Session, emails: Iterable[str], *, organization_id: str | None = None) -> bool:
    """:func:`hold_email` for every email of *emails*, in one statement and in sorted order (two writers locking
    the same emails never deadlock each other); ``True`` when taken, ``False`` when none is given."""
    wanted = sorted({e for e in emails if e})
    if not wanted:
        return False
    if organization_id is not None:
        hold_organization(session, organization_id)
    if not locks_emails(session):
        return organization_id is not None  # SQLite: the write turn is what was taken
    if len(wanted) == 1:
        session.execute(EMAIL_LOCK, {"email": wanted[0]})
    else:
        session.execute(_EMAILS_LOCK, {"emails": wanted})
    return True
