"""monoq.testing.suite.listing_scale (the conformance kit) on every built-in backend."""

from monoq.testing.suite.listing_scale import *
