"""Signed checkpoints of the audit chains, and verification that starts from the newest one it can trust.

A checkpoint states, signed with the deployment's Ed25519 key (:mod:`.audit_signing`), that an organization's
chain had ``hash`` at ``seq``. Checkpoints are made by the background worker (:func:`run`), never while an
ordinary write commits: every ``every`` events (a checkpoint at each multiple of it) and, while events keep
coming, at least once per ``interval`` seconds. The worker verifies the events since the last trusted checkpoint
before signing, so a checkpoint never seals a broken chain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ..models import AuditChainHead, AuditCheckpoint, AuditEvent, utcnow
from . import audit, audit_signing
from .audit_signing import Signer

log = logging.getLogger(__name__)

TRUST_SCAN = 20  # newest checkpoints tried before falling back to a walk from the first event


@dataclass(frozen=True, slots=True)
class CheckpointView:
    """A checkpoint as streams, exports and the API carry it (``type: checkpoint``)."""

    organization_id: str
    seq: int
    hash: str
    kid: str
    signature: str
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        return {"type": "checkpoint", "organization_id": self.organization_id, "seq": self.seq, "hash": self.hash,
                "kid": self.kid, "algorithm": audit_signing.ALGORITHM, "signature": self.signature,
                "created_at": self.created_at.isoformat(timespec="microseconds")}


def view(row: AuditCheckpoint) -> CheckpointView:
    return CheckpointView(row.organization_id, row.seq, row.hash, row.kid, row.signature, row.created_at)


def checkpoints(session: Session, organization_id: str, *, after_seq: int = 0,
                up_to_seq: int | None = None) -> list[CheckpointView]:
    """The organization's checkpoints in ``seq`` order."""
    query = select(AuditCheckpoint).where(AuditCheckpoint.organization_id == organization_id,
                                          AuditCheckpoint.seq > after_seq)
    if up_to_seq is not None:
        query = query.where(AuditCheckpoint.seq <= up_to_seq)
    return [view(r) for r in session.scalars(query.order_by(AuditCheckpoint.seq))]


def trusted(session: Session, organization_id: str, keys: dict[str, str]) -> CheckpointView | None:
    """The newest checkpoint whose signature verifies with a published key and whose ``(seq, hash)`` is still the
    stored event's: the point an incremental verification starts from."""
    rows = session.scalars(select(AuditCheckpoint).where(AuditCheckpoint.organization_id == organization_id)
                           .order_by(AuditCheckpoint.seq.desc()).limit(TRUST_SCAN))
    for row in rows:
        public = keys.get(row.kid)
        if public is None or not audit_signing.verify_signature(public, organization_id, row.seq, row.hash,
                                                                row.signature):
            continue
        stored = session.scalar(select(AuditEvent.hash).where(AuditEvent.organization_id == organization_id,
                                                              AuditEvent.seq == row.seq))
        if stored == row.hash:
            return view(row)
    return None


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """A chain report and the checkpoint it started from (``None``: from the first event)."""

    report: audit.ChainReport
    checkpoint: CheckpointView | None


def verify(session: Session, organization_id: str, keys: dict[str, str], *, full: bool = False,
           resume: tuple[int, str] | None = None, budget: float | None = None,
           clock: Callable[[], float] = time.monotonic,
           on_link: Callable[[int, str], None] | None = None, untrusted_breaks: bool = True) -> VerifyResult:
    """Verify the organization's chain: from the newest trusted checkpoint (only the new events), from the first
    event when *full*, or from *resume* ``(seq, hash)`` (a continuation). Past *budget* seconds the report is
    incomplete (``complete`` false) and names where to continue. *keys* are the trusted ones
    (:func:`audit_signing.trusted_keys`): a walked checkpoint none of them signed breaks the chain there unless
    not *untrusted_breaks*."""
    start: CheckpointView | None = None
    after_seq, prev_hash = 0, audit.GENESIS_HASH
    if resume is not None:
        after_seq, prev_hash = resume
    elif not full:
        start = trusted(session, organization_id, keys)
        if start is not None:
            after_seq, prev_hash = start.seq, start.hash
    deadline = None if budget is None else clock() + budget
    # A later signed checkpoint the stored chain no longer matches proves a rewrite, even one whose links hold.
    signed: dict[int, str | None] = {}
    for c in checkpoints(session, organization_id, after_seq=after_seq):
        if c.kid in keys and audit_signing.verify_signature(keys[c.kid], organization_id, c.seq, c.hash,
                                                            c.signature):
            signed[c.seq] = c.hash
        elif untrusted_breaks:  # a checkpoint no trusted key signed is a forgery (or an unconfigured old key)
            signed[c.seq] = None
    walked = [0]

    def check(seq: int, chain_hash: str) -> None:
        walked[0] += 1
        if signed.get(seq, chain_hash) != chain_hash:
            raise _Rewritten(seq, signed[seq] is None)
        if on_link is not None:
            on_link(seq, chain_hash)

    try:
        report = audit.verify_organization(session, organization_id, after_seq=after_seq, prev_hash=prev_hash,
                                           deadline=deadline, clock=clock, on_link=check)
    except _Rewritten as exc:
        problem = ("has a checkpoint no trusted key signed (a forged checkpoint, or a previous key missing "
                   "from HATIDATA_AUDIT_TRUSTED_KEYS)" if exc.untrusted
                   else "differs from the signed checkpoint at this event (the chain was rewritten)")
        report = audit.ChainReport(organization_id, walked[0] - 1, exc.seq, problem, after_seq, exc.seq - 1)
    return VerifyResult(report, start)


class _Rewritten(Exception):
    def __init__(self, seq: int, untrusted: bool) -> None:
        super().__init__(seq)
        self.seq, self.untrusted = seq, untrusted


def _due(head_seq: int, last: AuditCheckpoint | None, *, every: int, interval: float, now: datetime) -> bool:
    if last is None:
        return head_seq > 0
    if head_seq <= last.seq:
        return False
    return head_seq - last.seq >= every or now - last.created_at >= timedelta(seconds=interval)


def advance(session: Session, organization_id: str, signer: Signer, *, every: int, interval: float,
            now: datetime | None = None, previous: Iterable[str] | str | None = ()) -> list[CheckpointView]:
    """Make the organization's due checkpoints (in the caller's transaction): one at each multiple of *every*
    passed since the last one, and one at the head when *interval* seconds went by since the last. Nothing is
    signed when the events since the last trusted checkpoint do not verify (logged)."""
    now = now or utcnow()
    head_seq = session.scalar(select(AuditChainHead.seq).where(AuditChainHead.chain_key == organization_id)) or 0
    last = session.scalar(select(AuditCheckpoint).where(AuditCheckpoint.organization_id == organization_id)
                          .order_by(AuditCheckpoint.seq.desc()).limit(1))
    if not _due(head_seq, last, every=every, interval=interval, now=now):
        return []
    audit_signing.register(session, signer, now=now)
    keys = audit_signing.trusted_keys(signer, previous)
    marks: list[tuple[int, str]] = []

    def mark(seq: int, chain_hash: str) -> None:
        if seq % every == 0:
            marks.append((seq, chain_hash))

    # Checkpoints of a previous key the worker was not told about are skipped, not fatal: the readers report them.
    result = verify(session, organization_id, keys, on_link=mark, untrusted_breaks=False)
    report = result.report
    if not report.ok:
        log.error("audit chain of %s is broken at #%s (%s): no checkpoint signed", organization_id,
                  report.first_broken_seq, report.problem)
        return []
    interval_due = last is None or now - last.created_at >= timedelta(seconds=interval)
    if report.last_seq > 0 and interval_due and (not marks or marks[-1][0] != report.last_seq):
        marks.append((report.last_seq, report.last_hash))
    floor = last.seq if last is not None else 0
    made = [CheckpointView(organization_id, seq, chain_hash, signer.kid, signer.sign(organization_id, seq, chain_hash),
                           now) for seq, chain_hash in marks if seq > floor]
    rows = [{"organization_id": c.organization_id, "seq": c.seq, "hash": c.hash, "kid": c.kid,
             "signature": c.signature, "created_at": c.created_at} for c in made]
    if rows:
        # Two processes' workers may sign the same point: the first one's row stands (same statement, same key).
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        session.execute(insert(AuditCheckpoint).values(rows)
                        .on_conflict_do_nothing(index_elements=["organization_id", "seq"]))
    return made


def run(session: Session, signer: Signer | None, *, every: int, interval: float,
        now: datetime | None = None, previous: Iterable[str] | str | None = ()) -> int:
    """One pass of the checkpoint worker over every organization's chain, one transaction each; returns how many
    checkpoints it made (none without a signing key). *previous*: ``HATIDATA_AUDIT_TRUSTED_KEYS``."""
    if signer is None:
        return 0
    keys = [k for k in session.scalars(select(AuditChainHead.chain_key)) if k != "-"]
    session.rollback()
    made = 0
    for organization_id in sorted(keys):
        made += len(advance(session, organization_id, signer, every=every, interval=interval, now=now,
                            previous=previous))
        session.commit()
    return made
