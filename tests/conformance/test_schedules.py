"""monoq.testing.suite.schedules (the conformance kit) on every built-in backend."""

from monoq.testing.suite.schedules import *
