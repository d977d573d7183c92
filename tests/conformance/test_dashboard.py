"""monoq.testing.suite.dashboard (the conformance kit) on every built-in backend."""

from monoq.testing.suite.dashboard import *
