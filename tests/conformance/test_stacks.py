"""monoq.testing.suite.stacks (the conformance kit) on every built-in backend."""

from monoq.testing.suite.stacks import *
