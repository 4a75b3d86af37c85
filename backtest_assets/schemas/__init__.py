"""Pandera models of every asset's frame and the named checks evaluated on them."""
