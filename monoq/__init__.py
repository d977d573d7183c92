"""monoq: a job queue that is one program.

The public API: the ``handler`` decorator and handler ``Context``; ``connect`` and
``connect_sync`` for producers; the job model; the exceptions handlers raise to steer retries.
"""

from monoq.client import Client, JobDefaults, SyncClient, connect, connect_sync
from monoq.context import Context
from monoq.core.models import Attempt, Job, JobState, QueueStats
from monoq.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    Conflict,
    HandlerNotFound,
    JobNotFound,
    MonoqError,
    QueueFull,
    Retry,
    SkipRetry,
    ValidationError,
    WaitTimeout,
)
from monoq.plugin import Plugin, PluginOptions
from monoq.registry import handler

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "BackendError",
    "BackendUnavailable",
    "Client",
    "ConfigError",
    "Conflict",
    "Context",
    "HandlerNotFound",
    "Job",
    "JobDefaults",
    "JobNotFound",
    "JobState",
    "MonoqError",
    "Plugin",
    "PluginOptions",
    "QueueFull",
    "QueueStats",
    "Retry",
    "SkipRetry",
    "SyncClient",
    "ValidationError",
    "WaitTimeout",
    "__version__",
    "connect",
    "connect_sync",
    "handler",
]
