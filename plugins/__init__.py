"""The IdP plugins shipped with HatiData Auth (loaded through entry points, like any external plugin)."""
