"""WorkOS cursor pagination (``limit``/``before``/``after``/``order``) over id-sorted collections.

Ids are monotonic ULIDs (seeded ids sort before generated ones), so cursor comparison is by id string;
an unknown cursor id still works (it is compared, not looked up).

:func:`paginate` sorts the items it is given (small pools: a group's members, a user's groups);
:func:`paginate_collection` pages a whole ``Store`` collection without sorting it per request: its ids are kept
sorted between requests (rebuilt only when the collection's ids change), the cursor is found by bisection and only
the items next to it are read, so a page costs about the page, not the collection.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any

from flask import request

from .errors import invalid_params

T = dict[str, Any]


def list_params() -> tuple[int, str | None, str | None, str]:
    """Parse ``limit`` (1-100, default 10), ``before``, ``after`` and ``order`` from the query string."""
    raw_limit = request.args.get("limit", "10")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise invalid_params("limit must be an integer between 1 and 100.", "limit") from None
    if not 1 <= limit <= 100:
        raise invalid_params("limit must be an integer between 1 and 100.", "limit")
    order = request.args.get("order", "desc") or "desc"
    if order not in ("asc", "desc", "normal"):
        raise invalid_params("order must be one of asc, desc, normal.", "order")
    before = request.args.get("before") or None
    after = request.args.get("after") or None
    if before and after:
        raise invalid_params("Only one of before and after may be given.", "before", "after")
    return limit, before, after, order


def paginate(
    items: Iterable[T],
    render: Callable[[T], dict[str, Any]],
    *,
    key: Callable[[T], str] = lambda x: x["id"],
) -> dict[str, Any]:
    """Return the list envelope for ``items`` using the request's pagination parameters."""
    limit, before, after, order = list_params()
    ordered = sorted(items, key=key, reverse=order != "asc")
    if order == "normal":  # descending list, reversed cursor semantics: `after` fetches newer records
        before, after = after, before
    desc = order != "asc"

    def comes_after(item_id: str, cursor: str) -> bool:
        return item_id < cursor if desc else item_id > cursor

    def comes_before(item_id: str, cursor: str) -> bool:
        return item_id > cursor if desc else item_id < cursor

    if after:
        pool = [x for x in ordered if comes_after(key(x), after)]
        page = pool[:limit]
        has_more_after, has_more_before = len(pool) > limit, len(pool) < len(ordered)
    elif before:
        pool = [x for x in ordered if comes_before(key(x), before)]
        page = pool[-limit:]
        has_more_before, has_more_after = len(pool) > limit, len(pool) < len(ordered)
    else:
        page = ordered[:limit]
        has_more_after, has_more_before = len(ordered) > limit, False
    meta_before = key(page[0]) if page and has_more_before else None
    meta_after = key(page[-1]) if page and has_more_after else None
    if order == "normal":
        meta_before, meta_after = meta_after, meta_before
    return {
        "object": "list",
        "data": [render(x) for x in page],
        "list_metadata": {"before": meta_before, "after": meta_after},
    }


# id(collection) -> (its ids when sorted, those ids ascending). Checked against the collection's keys at each use
# (a C-speed set comparison), so a changed collection, or another one at a reused address, is sorted again.
_SORTED: dict[int, tuple[frozenset[str], list[str]]] = {}


def sorted_ids(collection: dict[str, T]) -> list[str]:
    """The collection's ids (its keys, each item's ``id``) in ascending order, sorted once per change."""
    cached = _SORTED.get(id(collection))
    if cached is not None and collection.keys() == cached[0]:
        return cached[1]
    ids = sorted(collection)
    if len(_SORTED) >= 64:  # collections replaced by a reset or a reload are forgotten
        _SORTED.pop(next(iter(_SORTED)))
    _SORTED[id(collection)] = (frozenset(ids), ids)
    return ids


def _walk(ids: list[str], start: int, step: int, ok: Callable[[str], bool], count: int) -> list[str]:
    """Up to *count* ids accepted by *ok*, from position *start* going *step* (+1 or -1)."""
    out: list[str] = []
    i = start
    while 0 <= i < len(ids) and len(out) < count:
        if ok(ids[i]):
            out.append(ids[i])
        i += step
    return out


def paginate_collection(
    collection: dict[str, T],
    render: Callable[[T], dict[str, Any]],
    accept: Callable[[T], bool] = lambda _x: True,
) -> dict[str, Any]:
    """The list envelope of the collection's items *accept* keeps, paged like :func:`paginate`."""
    limit, before, after, order = list_params()
    ids = sorted_ids(collection)
    if order == "normal":  # descending list, reversed cursor semantics: `after` fetches newer records
        before, after = after, before
    desc = order != "asc"
    forward = -1 if desc else 1  # the walking direction of the listing order over ascending ids

    def ok(item_id: str) -> bool:
        return accept(collection[item_id])

    if after:
        # The first item after the cursor in the listing order, and the nearest one at or before it.
        start = bisect.bisect_left(ids, after) - 1 if desc else bisect.bisect_right(ids, after)
        pool = _walk(ids, start, forward, ok, limit + 1)
        page, has_more_after = pool[:limit], len(pool) > limit
        has_more_before = bool(_walk(ids, start - forward, -forward, ok, 1))
    elif before:
        # The nearest item before the cursor in the listing order (walking back), and the first at or after it.
        start = bisect.bisect_right(ids, before) if desc else bisect.bisect_left(ids, before) - 1
        pool = _walk(ids, start, -forward, ok, limit + 1)
        page, has_more_before = pool[:limit][::-1], len(pool) > limit
        has_more_after = bool(_walk(ids, start + forward, forward, ok, 1))
    else:
        pool = _walk(ids, len(ids) - 1 if desc else 0, forward, ok, limit + 1)
        page, has_more_after, has_more_before = pool[:limit], len(pool) > limit, False
    meta_before = page[0] if page and has_more_before else None
    meta_after = page[-1] if page and has_more_after else None
    if order == "normal":
        meta_before, meta_after = meta_after, meta_before
    return {
        "object": "list",
        "data": [render(collection[x]) for x in page],
        "list_metadata": {"before": meta_before, "after": meta_after},
    }

