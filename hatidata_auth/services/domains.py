"""Organization domains and their WorkOS verification states, and who owns an email's domain.

An organization *owns* a domain once WorkOS reports it ``verified`` (or ``legacy_verified``) for it. Ownership
decides whose identity sources may speak for an email: a directory or SSO connection of organization A never
vouches for an email on a domain another organization verified (see ``docs/auth.md``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import idna
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Organization

VERIFIED_STATES = frozenset({"verified", "legacy_verified"})


@functools.lru_cache(maxsize=4096)  # pure; a resync or a group's members repeat a few domains many times
def normalize_domain(value: str) -> str:
    """The one comparable form of a domain, whoever spells it (an admin, WorkOS, an email address): NFKC-folded
    (full-width and other compatibility forms become their ASCII letters), without surrounding whitespace or
    trailing dots; an ASCII name lower-cased; any other (non-ASCII, or with a punycode ``xn--`` label) its IDNA
    2008 Unicode form by UTS #46, so ``bücher.test``, ``BÜCHER.test`` and ``xn--bcher-kva.test`` are one domain
    and ``straße.de`` stays itself (not ``strasse.de``, another domain). A name IDNA refuses keeps its NFKC,
    case-folded form."""
    # An ideographic full stop is a dot to UTS #46 (NFKC maps the full-width and half-width ones to it): mapped
    # first, so a trailing one is dropped as a trailing dot is (a break-it review: "acme.test。" matched no owner).
    folded = _TRAILING.sub("", unicodedata.normalize("NFKC", value).replace("\u3002", ".").strip())
    lowered = folded.lower()
    if folded.isascii() and "xn--" not in lowered:
        return lowered
    try:  # UTS #46 drops what is ignored (a zero-width space, a soft hyphen): a trailing dot may be left last
        return _TRAILING.sub("", str(idna.decode(idna.encode(folded, uts46=True))))
    except (idna.IDNAError, UnicodeError):
        return folded.casefold()


_TRAILING = re.compile(r"[\s.\u00ad\u200b-\u200d\u2060\ufeff]+$")
"""Trailing dots, spaces and the characters UTS #46 ignores, in any mix (stripped once, "a.test. ." kept a dot)."""
_LDH_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")  # how a URL parser reads an IPv4 address's last part


def parse_domain(value: str) -> str:
    """A domain as an admin types it, in its stored form (:func:`normalize_domain`, the form emails on it are
    compared in). :class:`ValueError` naming why when it is not a DNS name of at least two labels: ASCII labels of
    letters, digits and inner hyphens, at most 63 characters; non-ASCII and ``xn--`` labels valid IDNA 2008 (by
    ``idna``); the last not a number (an IP address: ``10.0.0.1``, ``0x7f.0x1``); no scheme, port, path, ``@`` or
    ``_``; at most 253 characters in its ASCII form."""
    domain = normalize_domain(value)
    labels = domain.split(".")
    try:
        ascii_labels = [label if _LDH_LABEL.fullmatch(label) and not label.startswith("xn--")
                        else idna.encode(label, uts46=True).decode("ascii") for label in labels]
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(f"{value!r} is not a domain ({exc})") from None
    if len(labels) < 2 or _NUMERIC_LABEL.fullmatch(labels[-1]) or len(".".join(ascii_labels)) > 253:
        raise ValueError(f"{value!r} is not a domain (a name such as example.com: two labels or more, "
                         "not an IP address)")
    return domain


def email_domain(email: str | None) -> str:
    """The normalized domain of an email address (``""`` when there is none)."""
    if not email:
        return ""
    folded = unicodedata.normalize("NFKC", email)
    return normalize_domain(folded.rpartition("@")[2]) if "@" in folded else ""


def _field(item: Any, name: str) -> Any:
    value = item.get(name) if isinstance(item, dict) else getattr(item, name, None)
    return None if value is None else str(getattr(value, "value", value))


def domain_states(workos_domains: Any) -> dict[str, dict[str, Any]]:
    """``{domain: {"state", "verification_strategy"}}`` from WorkOS ``OrganizationDomain`` objects or dicts
    (a plain string, as older payloads carry, has no known state: ``None``)."""
    out: dict[str, dict[str, Any]] = {}
    for item in workos_domains or []:
        if isinstance(item, str):
            out[normalize_domain(item)] = {"state": None, "verification_strategy": None}
            continue
        domain = _field(item, "domain")
        if domain:
            out[normalize_domain(domain)] = {"state": _field(item, "state"),
                                             "verification_strategy": _field(item, "verification_strategy")}
    return out


# Built once (no parameters): a reused statement keeps its cache key, so each load only runs it.
_LIVE_DOMAINS = (select(Organization.id, Organization.domain_states)
                 .where(Organization.live)
                 .order_by(Organization.created_at, Organization.id))


@dataclass(frozen=True, slots=True)
class VerifiedDomains:
    """Every live organization's verified domains, read in one query: ``owners`` answers from memory.

    *by_domain*: ``{normalized domain: organization ids that verified it}``; *rank*: ``{organization id: age
    rank}``, oldest first. A unit of work that asks for many emails (the resync, a group's members) loads it once
    (``EventContext.foreign_owner``).
    """

    by_domain: dict[str, tuple[str, ...]]
    rank: dict[str, int]

    @classmethod
    def load(cls, db: Session) -> VerifiedDomains:
        """One query over the live organizations."""
        rows = db.execute(_LIVE_DOMAINS)
        by_domain: dict[str, list[str]] = {}
        rank: dict[str, int] = {}
        for org_id, states in rows:
            rank[str(org_id)] = len(rank)
            for name, info in (states or {}).items():
                if isinstance(info, dict) and info.get("state") in VERIFIED_STATES:
                    by_domain.setdefault(name, []).append(str(org_id))
        return cls({name: tuple(ids) for name, ids in by_domain.items()}, rank)

    def owners(self, email: str | None) -> tuple[str, ...]:
        """Our ids of the organizations that verified the email's domain or a parent domain of it, oldest first."""
        domain = email_domain(email)
        if not domain:
            return ()
        labels = domain.split(".")
        candidates = [".".join(labels[i:]) for i in range(len(labels) - 1)] or [domain]
        found = {org_id for name in candidates for org_id in self.by_domain.get(name, ())}
        return tuple(sorted(found, key=self.rank.__getitem__))

    def foreign_owner(self, organization_id: str | None, email: str | None) -> str | None:
        """The organization other than *organization_id* that verified the email's domain, if any."""
        owners = self.owners(email)
        return owners[0] if owners and owners[0] != organization_id else None

    def owns(self, organization_id: str, email: str | None) -> bool:
        """Whether *organization_id* is the organization (the oldest, if several) that verified the email's domain:
        the authority for the address."""
        owners = self.owners(email)
        return bool(owners) and owners[0] == organization_id


def verified_owners(db: Session, email: str | None) -> tuple[str, ...]:
    """Our ids of the live organizations that verified the email's domain (or a parent domain of it), oldest
    first: pending or failed claims count for nobody.

    Domain ownership is global by nature, so this lookup reads every live organization's domains.
    """
    if not email_domain(email):
        return ()
    return VerifiedDomains.load(db).owners(email)


def verified_owner(db: Session, email: str | None) -> str | None:
    """Our id of the (oldest) organization that verified the email's domain or a parent domain of it, if any."""
    owners = verified_owners(db, email)
    return owners[0] if owners else None


def foreign_owner(db: Session, organization_id: str | None, email: str | None) -> str | None:
    """The organization other than *organization_id* that verified the email's domain, if any."""
    owner = verified_owner(db, email)
    return owner if owner is not None and owner != organization_id else None
