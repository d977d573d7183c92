"""monoq.testing.suite.wakeups (the conformance kit) on every built-in backend."""

from monoq.testing.suite.wakeups import *
