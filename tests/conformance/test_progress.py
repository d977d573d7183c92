"""monoq.testing.suite.progress (the conformance kit) on every built-in backend."""

from monoq.testing.suite.progress import *
