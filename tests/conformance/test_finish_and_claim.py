"""monoq.testing.suite.finish_and_claim (the conformance kit) on every built-in backend."""

from monoq.testing.suite.finish_and_claim import *
