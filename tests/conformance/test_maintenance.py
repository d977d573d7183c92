"""monoq.testing.suite.maintenance (the conformance kit) on every built-in backend."""

from monoq.testing.suite.maintenance import *
