"""Every loaded IdP plugin passes the plugin contract (the suite external plugins reuse via pytest11)."""

from __future__ import annotations

from hatidata_auth.idp.contract import IdPPluginContract


class TestEveryPluginKeepsTheContract(IdPPluginContract):
    """Runs over every plugin installed through the ``hatidata_auth.idp_plugins`` entry points."""
