"""monoq.testing.suite.audit (the conformance kit) on every built-in backend."""

from monoq.testing.suite.audit import *
