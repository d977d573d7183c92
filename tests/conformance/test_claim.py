"""monoq.testing.suite.claim (the conformance kit) on every built-in backend."""

from monoq.testing.suite.claim import *
