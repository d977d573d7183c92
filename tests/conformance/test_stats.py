"""monoq.testing.suite.stats (the conformance kit) on every built-in backend."""

from monoq.testing.suite.stats import *
