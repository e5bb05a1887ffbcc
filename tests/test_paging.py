"""``services.paging``: keyset pages of a query, mapped to the service's values, and the key to continue from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from hatidata_auth.models import Organization
from hatidata_auth.services import paging


def _orgs(db_session: Any, count: int) -> list[str]:
    orgs = [Organization(name=f"Paged {i}", domains=[f"paged{i}.test"]) for i in range(count)]
    db_session.add_all(orgs)
    db_session.flush()
    return sorted(org.id for org in orgs)


def test_pages_walk_every_row_once_in_key_order(db_session: Any) -> None:
    ids = _orgs(db_session, 5)
    query = select(Organization).where(Organization.id.in_(ids))
    seen: list[str] = []
    after: paging.Key | None = None
    pages = 0
    while True:
        page = paging.paginate(db_session, query, Organization.id, paging.PageRequest(after, 2), lambda o: o.id)
        assert isinstance(page.items, tuple)
        assert len(page.items) <= 2
        seen.extend(page.items)
        pages += 1
        if page.next_key is None:
            break
        assert page.next_key == page.items[-1]
        after = page.next_key
    assert seen == ids
    assert pages == 3


def test_a_full_last_page_says_nothing_follows(db_session: Any) -> None:
    ids = _orgs(db_session, 2)
    query = select(Organization).where(Organization.id.in_(ids))
    page = paging.paginate(db_session, query, Organization.id, paging.PageRequest(None, 2), lambda o: o.id)
    assert page == paging.Page(tuple(ids), None)


def test_rows_of_several_entities_key_on_the_first(db_session: Any) -> None:
    ids = _orgs(db_session, 3)
    query = select(Organization, Organization.name).where(Organization.id.in_(ids))
    page = paging.paginate(db_session, query, Organization.id, paging.PageRequest(ids[0], 1),
                           lambda row: (row[0].id, row[1]), scalars=False)
    assert [item[0] for item in page.items] == [ids[1]]
    assert page.next_key == ids[1]


def test_key_kind_reads_the_column() -> None:
    assert paging.key_kind(Organization.id) == paging.KeyKind(str, 40)
