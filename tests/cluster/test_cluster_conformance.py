"""The conformance kit (monoq.testing) on the Redis backend over a Redis Cluster of three
masters and three replicas (tests/cluster/conftest.py), as a third-party project runs it."""

from monoq.testing.suite import *
