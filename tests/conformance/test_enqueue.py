"""monoq.testing.suite.enqueue (the conformance kit) on every built-in backend."""

from monoq.testing.suite.enqueue import *
