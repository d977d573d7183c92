"""Storage backends, loaded by URL scheme from the ``monoq.backends`` entry-point group."""
