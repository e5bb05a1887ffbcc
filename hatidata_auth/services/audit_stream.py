"""Offline verification of a received audit stream (NDJSON of events, checkpoints and trailers: docs/audit.md,
"Stream format"): chain links and hashes, no gaps, every checkpoint signed by a published key and matching the
events, repeated deliveries de-duplicated by ``seq``. The first problem is named by the event's ``seq`` and id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from .. import inputs
from . import audit, audit_signing

# A line is one event (details within the API's JSON bounds) or a checkpoint or trailer: anything longer or deeper
# is hostile input, named by its line number, never parsed into a traceback or unbounded memory.
MAX_LINE = 4 * inputs.MAX_JSON_BYTES
MAX_DEPTH = inputs.MAX_JSON_DEPTH + 2


@dataclass(frozen=True, slots=True)
class StreamReport:
    """What a stream held, and its first problem (``None``: it verifies)."""

    events: int
    duplicates: int
    first_seq: int | None
    last_seq: int | None
    checkpoints: int
    last_checkpoint_seq: int | None
    trailer: dict[str, Any] | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


def event_hash(prev_hash: str, event: dict[str, Any]) -> str:
    """The chain hash of an exported event object (the API's shape), as :func:`audit.chain_hash` computes it."""
    actor, target = event.get("actor") or {}, event.get("target") or {}
    body = {
        "public_id": event.get("id"), "organization_id": event.get("organization_id"), "seq": event.get("seq"),
        "actor": {"type": actor.get("type"), "id": actor.get("id"), "email": actor.get("email")},
        "action": event.get("action"), "target": {"type": target.get("type"), "id": target.get("id")},
        "outcome": event.get("outcome"), "ip_address": event.get("ip_address"),
        "user_agent": event.get("user_agent"), "request_id": event.get("request_id"),
        "source_event_id": event.get("source_event_id"), "details": event.get("details"),
        "created_at": event.get("created_at"),
    }
    return hashlib.sha256((prev_hash + audit.canonical_dumps(body)).encode()).hexdigest()


class _Failed(Exception):
    pass


class _Checker:
    def __init__(self, keys: dict[str, str]) -> None:
        self.keys = keys
        self.hashes: dict[int, str] = {}
        self.expected: int | None = None
        self.first: int | None = None
        self.prev = audit.GENESIS_HASH
        self.duplicates = 0
        self.checkpoints = 0
        self.last_checkpoint: int | None = None
        self.pending: list[dict[str, Any]] = []
        self.trailer: dict[str, Any] | None = None
        self.trailers = 0
        self.organization: str | None = None

    def event(self, item: dict[str, Any]) -> None:
        seq, name = item.get("seq"), f"event #{item.get('seq')} ({item.get('id')})"
        if not isinstance(seq, int):
            raise _Failed(f"an event without a seq ({item.get('id')})")
        if seq in self.hashes:
            if item.get("hash") != self.hashes[seq] or event_hash(str(item.get("prev_hash")), item) != item["hash"]:
                raise _Failed(f"{name}: a repeated delivery differs from the first")
            self.duplicates += 1
            return
        if self.expected is None:
            self.first = self.expected = seq
            self.prev = audit.GENESIS_HASH if seq == 1 else str(item.get("prev_hash"))
            self.organization = item.get("organization_id")
        if seq != self.expected:
            raise _Failed(f"event #{self.expected} is missing (next received: {name})")
        if item.get("organization_id") != self.organization:
            raise _Failed(f"{name}: belongs to another organization")
        if item.get("prev_hash") != self.prev:
            raise _Failed(f"{name}: prev_hash does not match the previous event")
        if event_hash(self.prev, item) != item.get("hash"):
            raise _Failed(f"{name}: content does not match its hash (altered)")
        self.prev = self.hashes[seq] = str(item["hash"])
        self.expected = seq + 1
        self._settle()

    def checkpoint(self, item: dict[str, Any]) -> None:
        seq, kid = item.get("seq"), str(item.get("kid"))
        if kid not in self.keys:
            raise _Failed(f"checkpoint at #{seq}: signed with an unknown key {kid!r}")
        if not isinstance(seq, int) or not audit_signing.verify_signature(
                self.keys[kid], str(item.get("organization_id")), seq, str(item.get("hash")),
                str(item.get("signature"))):
            raise _Failed(f"checkpoint at #{seq}: the signature does not verify")
        if self.organization is not None and item.get("organization_id") != self.organization:
            raise _Failed(f"checkpoint at #{seq}: for another organization")
        self.pending.append(item)
        self._settle()

    def _settle(self) -> None:
        for item in [c for c in self.pending if c["seq"] in self.hashes]:
            self.pending.remove(item)
            if self.hashes[item["seq"]] != item.get("hash"):
                raise _Failed(f"event #{item['seq']}: differs from the signed checkpoint (the chain was altered "
                              f"at or before it)")
            self.checkpoints += 1
            self.last_checkpoint = max(self.last_checkpoint or 0, item["seq"])

    def end(self) -> None:
        for item in self.pending:
            if self.first is not None and item["seq"] < self.first:
                continue  # signs events before the stream began
            raise _Failed(f"event #{self.expected} is missing (a checkpoint signs #{item['seq']}, the stream ends "
                          f"before it)")
        if self.trailer is not None:
            # A paged export has one trailer per part: the count is checked when the stream is one part.
            received = len(self.hashes)
            count = self.trailer.get("count")
            if self.trailers == 1 and isinstance(count, int) and count > received and self.first is not None \
                    and self.trailer.get("final_hash") == self.prev:
                begins = (self.expected or 1) - count
                raise _Failed(f"event #{begins} is missing (the trailer counts {count} events ending with "
                              f"#{(self.expected or 1) - 1}; the stream begins at #{self.first})")
            if (self.trailers == 1 and self.trailer.get("count") != received) or (
                    received and self.trailer.get("final_hash") != self.prev):
                raise _Failed(f"the trailer names {self.trailer.get('count')} events ending with "
                              f"{self.trailer.get('final_hash')}; received {received} ending with "
                              f"event #{(self.expected or 1) - 1}")


def bounded_lines(handle: IO[str], limit: int = MAX_LINE) -> Iterator[str]:
    """The lines of *handle*, each read with at most *limit* + 1 characters: a longer line arrives cut (without its
    newline) and :func:`verify_stream` names it."""
    while line := handle.readline(limit + 1):
        yield line
        if len(line) > limit:
            return


def _parse(number: int, line: str) -> dict[str, Any]:
    if len(line.rstrip("\r\n")) > MAX_LINE:
        raise _Failed(f"line {number} is longer than {MAX_LINE} characters")
    try:
        item = inputs.load_json(line.encode("utf-8", "surrogatepass"), max_depth=MAX_DEPTH)
    except inputs.InvalidJSON as exc:
        raise _Failed(f"line {number} is not JSON ({exc.message})") from None
    if not isinstance(item, dict):
        raise _Failed(f"line {number} is not a JSON object")
    return item


def _dispatch(checker: _Checker, number: int, item: dict[str, Any]) -> None:
    kind = item.get("type", "event")
    if kind == "event":
        checker.event(item)
    elif kind == "checkpoint":
        checker.checkpoint(item)
    elif kind == "trailer":
        checker.trailer = item
        checker.trailers += 1
    else:
        raise _Failed(f"line {number}: unknown record type {kind!r}")


def verify_stream(lines: Iterable[str], keys: dict[str, str]) -> StreamReport:
    """Verify a received stream with the published public keys (``kid`` -> base64url)."""
    checker = _Checker(keys)
    problem = None
    try:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            item = _parse(number, line)
            try:
                _dispatch(checker, number, item)
            except (ValueError, TypeError, KeyError) as exc:  # e.g. a lone surrogate that cannot be hashed
                raise _Failed(f"line {number} is not a well-formed record ({type(exc).__name__})") from None
        checker.end()
    except _Failed as failure:
        problem = str(failure)
    last = None if checker.expected is None else checker.expected - 1
    return StreamReport(len(checker.hashes), checker.duplicates, checker.first, last, checker.checkpoints,
                        checker.last_checkpoint, checker.trailer, problem)
