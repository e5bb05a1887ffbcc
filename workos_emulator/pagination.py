"""WorkOS cursor pagination (``limit``/``before``/``after``/``order``) over id-sorted collections.

Ids are monotonic ULIDs (seeded ids sort before generated ones), so cursor comparison is by id string;
an unknown cursor id still works (it is compared, not looked up).
"""

from __future__ import annotations

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
