"""One ``Role`` with one ranking: every other list of roles is read from it or held equal to it here."""

from __future__ import annotations

import hatidata_auth.idp as idp_api
from hatidata_auth.models import ROLES as MODEL_ROLES
from hatidata_auth.roles import (
    DEFAULT_ROLE,
    ROLE_ORDER,
    ROLE_PERMISSIONS,
    ROLES,
    Role,
    is_role,
    role_at_least,
    role_rank,
)
from hatidata_auth.services import role_mapping
from hatidata_auth.services.demo_mappings import DEMO_GROUP_ROLES
from hatidata_auth.sso_wizard.steps import ROLE_CHOICES


def test_one_ranking_weakest_first() -> None:
    assert ROLE_ORDER == ("viewer", "developer", "admin") == tuple(Role)
    assert [role_rank(r) for r in ROLE_ORDER] == [0, 1, 2]
    assert role_rank(None) == role_rank("owner") == -1
    assert role_at_least("admin", Role.DEVELOPER)
    assert not role_at_least("viewer", "developer")
    assert not role_at_least("owner", "owner")


def test_every_list_of_roles_is_the_same_roles() -> None:
    # The plugin API may import nothing from the core, so it keeps its own copy: held equal here.
    assert ROLES == MODEL_ROLES == ROLE_CHOICES == idp_api.ROLES == ("admin", "developer", "viewer")
    assert set(ROLE_PERMISSIONS) == set(DEMO_GROUP_ROLES.values()) == set(Role)
    assert {role for _, role in idp_api.CANONICAL_GROUPS} == set(Role)
    assert is_role(DEFAULT_ROLE)
    assert not is_role(None)
    assert not is_role("owner")


def test_mappings_credit_the_strongest_role_of_the_one_ranking() -> None:
    specs = role_mapping.preset("name", {"viewer": "V", "admin": "A", "developer": "D"})
    assert [s.role for s in sorted(specs, key=lambda s: -role_rank(s.role))] == list(ROLES)
    groups = [role_mapping.GroupRef(name=n) for n in ("V", "D", "A")]
    assert role_mapping.resolve_role(groups, specs, None).role == "admin"
    assert role_mapping.resolve_role(groups[:2], specs, None).role == "developer"
