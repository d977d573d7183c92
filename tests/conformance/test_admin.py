"""monoq.testing.suite.admin (the conformance kit) on every built-in backend."""

from monoq.testing.suite.admin import *
