"""The worker kit: typed handlers on NATS request-reply and JetStream, with discovery,
telemetry, logging, configuration, storage clients and graceful shutdown."""

# First: nats-py is imported without aiohttp (~10 MiB) unless a ws:// server needs it.
from workers.runtime import nats_tcp  # noqa: F401  # isort: skip
from workers.runtime.component import Component
from workers.runtime.config import Settings
from workers.runtime.context import Context
from workers.runtime.resources import Resources
from workers.runtime.worker import Worker

__all__ = ["Component", "Context", "Resources", "Settings", "Worker"]
