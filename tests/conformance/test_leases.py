"""monoq.testing.suite.leases (the conformance kit) on every built-in backend."""

from monoq.testing.suite.leases import *
