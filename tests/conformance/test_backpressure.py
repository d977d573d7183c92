"""monoq.testing.suite.backpressure (the conformance kit) on every built-in backend."""

from monoq.testing.suite.backpressure import *
