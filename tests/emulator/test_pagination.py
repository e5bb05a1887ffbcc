"""The emulator's collection paging (ids kept sorted, bisection on the cursor) answers exactly what sorting the
filtered collection on every request answered, for every order, cursor and limit."""

from __future__ import annotations

from typing import Any

from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from workos_emulator import pagination

APP = Flask("pagination-test")
IDS = st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=1, max_size=3)


def _render(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["id"]}


@settings(max_examples=400, deadline=None)
@given(ids=st.lists(IDS, max_size=40, unique=True), kept=st.sets(IDS), limit=st.integers(1, 12),
       order=st.sampled_from(["asc", "desc", "normal"]), side=st.sampled_from(["after", "before", None]),
       cursor=IDS, pick=st.integers(0, 60), changes=st.lists(IDS, max_size=5))
def test_paging_a_collection_equals_sorting_it(ids: list[str], kept: set[str], limit: int, order: str,
                                               side: str | None, cursor: str, pick: int,
                                               changes: list[str]) -> None:
    cursor = ids[pick] if pick < len(ids) else cursor  # often an id of the collection, as a real cursor is
    collection = {i: {"id": i, "keep": i in kept or len(kept) < 3} for i in ids}
    query: dict[str, Any] = {"limit": limit, "order": order}
    if side:
        query[side] = cursor
    for round_ in range(2):  # the second round after the collection changed: the kept order must follow
        with APP.test_request_context(query_string=query):
            got = pagination.paginate_collection(collection, _render, lambda x: bool(x["keep"]))
            want = pagination.paginate([x for x in collection.values() if x["keep"]], _render)
        assert got == want, (round_, query)
        for change in changes:
            if change in collection:
                del collection[change]
            else:
                collection[change] = {"id": change, "keep": True}


def test_walking_a_full_listing_visits_every_kept_item_once() -> None:
    collection = {f"u{n:04d}": {"id": f"u{n:04d}", "keep": n % 3 != 0} for n in range(500)}
    for order in ("asc", "desc"):
        seen: list[str] = []
        after: str | None = None
        while True:
            query: dict[str, Any] = {"limit": 7, "order": order, **({"after": after} if after else {})}
            with APP.test_request_context(query_string=query):
                body = pagination.paginate_collection(collection, _render, lambda x: bool(x["keep"]))
            seen += [x["id"] for x in body["data"]]
            after = body["list_metadata"]["after"]
            if after is None:
                break
        kept = sorted(i for i, x in collection.items() if x["keep"])
        assert seen == (kept if order == "asc" else kept[::-1])
