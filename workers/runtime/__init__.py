"""The worker kit: typed handlers on NATS request-reply and JetStream, with discovery,
telemetry, logging, configuration, storage clients and graceful shutdown."""

# First: nats-py without aiohttp, structlog without rich (~15 MiB a process; see the module).
from workers.runtime import slim_imports  # noqa: F401  # isort: skip
from workers.runtime.component import Component
from workers.runtime.config import Settings
from workers.runtime.context import Context
from workers.runtime.resources import Resources
from workers.runtime.worker import Worker

__all__ = ["Component", "Context", "Resources", "Settings", "Worker"]
