"""Keyset paging of a query: one page of frozen values after a typed key, and the key to continue from.

The API turns the key into its opaque cursor and back (``api.common``); services give the query, the unique
sort column and the mapper from a row to the frozen value they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Integer, Select, SmallInteger
from sqlalchemy.orm import InstrumentedAttribute, Session

T = TypeVar("T")
Key = int | str

MAX_KEY_LENGTH = 255
# The largest value of each integer column type on every backend (PostgreSQL's INTEGER is 32-bit).
INTEGER_LARGEST = {BigInteger: 2**63 - 1, SmallInteger: 2**15 - 1, Integer: 2**31 - 1}


@dataclass(frozen=True, slots=True)
class KeyKind:
    """What a sort key may be: its type and, for a string, the longest the column holds."""

    type: type[int] | type[str]
    longest: int = MAX_KEY_LENGTH
    largest: int = 2**63 - 1  # an integer key's highest value (its lowest: -largest - 1): the column's range

    def holds(self, key: object) -> bool:
        """Whether *key* is a value the column can hold, so comparing it cannot fail in the database."""
        if isinstance(key, bool) or not isinstance(key, self.type):
            return False
        if isinstance(key, int):
            return -self.largest - 1 <= key <= self.largest
        return len(str(key)) <= self.longest


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page: the items after the key *after* (``None``: the first page), at most *limit* of them."""

    after: Key | None
    limit: int


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page: its items in order and the key of the last one when more follow (``None`` on the last page)."""

    items: tuple[T, ...]
    next_key: Key | None


def key_kind(column: InstrumentedAttribute[Any]) -> KeyKind:
    """The kind of key a sort column holds (``MAX_KEY_LENGTH`` for an unbounded string)."""
    column_type = column.type
    if isinstance(column_type, Integer):
        largest = next(v for t, v in INTEGER_LARGEST.items() if isinstance(column_type, t))
        return KeyKind(int, largest=largest)
    return KeyKind(str, int(getattr(column_type, "length", None) or MAX_KEY_LENGTH))


def paginate(session: Session, query: Select[*tuple[Any, ...]], key: InstrumentedAttribute[Any],
             page: PageRequest, mapper: Callable[[Any], T], *, scalars: bool = True,
             descending: bool = False) -> Page[T]:
    """One page of *query* ordered by the unique column *key* (highest first when *descending*), each row (the
    first entity when *scalars*, the whole row otherwise) made a value by *mapper*."""
    if page.after is not None:
        query = query.where(key < page.after if descending else key > page.after)
    query = query.order_by(key.desc() if descending else key).limit(page.limit + 1)
    rows = list(session.scalars(query) if scalars else session.execute(query).all())
    more = len(rows) > page.limit
    rows = rows[:page.limit]
    last = rows[-1] if more and rows else None
    next_key = None if last is None else getattr(last if scalars else last[0], key.key)
    return Page(tuple(mapper(row) for row in rows), next_key)
