"""monoq.testing.suite.agreement (the conformance kit) on every built-in backend."""

from monoq.testing.suite.agreement import *
