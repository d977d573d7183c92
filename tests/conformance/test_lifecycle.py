"""monoq.testing.suite.lifecycle (the conformance kit) on every built-in backend."""

from monoq.testing.suite.lifecycle import *
