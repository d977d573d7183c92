"""monoq.testing.suite.optional (the conformance kit) on every built-in backend."""

from monoq.testing.suite.optional import *
