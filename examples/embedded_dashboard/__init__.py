"""A small dashboard app that embeds HatiData's login routes (see ``app.py``)."""
