"""Tenant tables are indexed for the lookups every query makes: by organization first, never twice."""

from __future__ import annotations

from hatidata_auth.extensions import db
from hatidata_auth.models import TenantMixin


def _leading_columns(table: object) -> list[tuple[str, ...]]:
    indexes = [tuple(c.name for c in ix.columns) for ix in table.indexes]  # type: ignore[attr-defined]
    uniques = [tuple(c.name for c in uc.columns) for uc in table.constraints  # type: ignore[attr-defined]
               if uc.__class__.__name__ == "UniqueConstraint"]
    return indexes + uniques


def test_no_single_column_organization_index_beside_a_composite_one() -> None:
    for table in db.metadata.sorted_tables:
        keys = _leading_columns(table)
        composite = [k for k in keys if len(k) > 1 and k[0] == "organization_id"]
        if composite:
            assert ("organization_id",) not in keys, (
                f"{table.name}: the single-column organization_id index duplicates {composite[0]}; "
                f"set __tenant_index__ = False on its model")


def test_every_tenant_table_is_reachable_by_organization() -> None:
    for mapper in db.Model.registry.mappers:
        if not issubclass(mapper.class_, TenantMixin):
            continue
        table = mapper.local_table
        assert any(k[0] == "organization_id" for k in _leading_columns(table)), (
            f"{table.name}: no index leads with organization_id")


def test_the_resync_lookups_have_composite_indexes() -> None:
    # The per-page lookups of the full resync (services/reconcile.py): each is (organization_id, id IN page).
    wanted = {"directory_users": ("organization_id", "workos_id"),
              "directory_groups": ("organization_id", "workos_id"),
              "directory_group_memberships": ("organization_id", "user_workos_id"),
              "memberships": ("organization_id", "directory_user_id")}
    tables = {t.name: t for t in db.metadata.sorted_tables}
    for name, columns in wanted.items():
        assert columns in {k[:2] for k in _leading_columns(tables[name])}, f"{name} lacks an index on {columns}"
