"""``POST /webhooks/workos``: signed WorkOS webhooks into the durable inbox."""

from __future__ import annotations

from .views import bp

__all__ = ["bp"]
