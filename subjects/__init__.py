"""Every name on the wire, defined once (DESIGN §3).

    ai.v1.<tenant>.req.<component>.<op>     core request-reply, queue group = component
    ai.v1.<tenant>.job.<component>.<op>     JetStream AI_JOBS (work queue)
    ai.v1.<tenant>.evt.<component>.<event>  JetStream AI_EVENTS (replayable)
    ai.v1.<tenant>.dlq.<component>.<op>     JetStream AI_DLQ (jobs that could not be done)

The tenant is always the subject token: workers read it from here, never from a body or header.
Stream, consumer, bucket and key names live here too, so nothing else spells them.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from schemas.errors import BadRequest

PREFIX = "ai.v1"
Kind = Literal["req", "job", "evt", "dlq"]

TENANT_PATTERN = r"[a-z0-9][a-z0-9_-]{0,62}"
_TENANT = re.compile(TENANT_PATTERN + r"\Z")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}\Z")

STREAM_EVENTS = "AI_EVENTS"
STREAM_JOBS = "AI_JOBS"
STREAM_DLQ = "AI_DLQ"

# Headers the fleet defines on top of the NATS micro and W3C ones.
HEADER_CONTENT_TYPE = "Content-Type"
HEADER_REQUEST_ID = "X-Request-ID"
HEADER_USER_ID = "X-User-ID"
HEADER_TIMEOUT_MS = "Aifleet-Timeout-Ms"
HEADER_MESSAGE_TYPE = "Aifleet-Type"
HEADER_STREAM_SEQ = "Aifleet-Stream-Seq"
HEADER_STREAM_END = "Aifleet-Stream-End"
HEADER_ERROR_CODE = "Nats-Service-Error-Code"
HEADER_ERROR = "Nats-Service-Error"
HEADER_MSG_ID = "Nats-Msg-Id"
HEADER_DLQ_SUBJECT = "Aifleet-Dlq-Subject"
HEADER_DLQ_SEQUENCE = "Aifleet-Dlq-Stream-Seq"
HEADER_DLQ_DELIVERIES = "Aifleet-Dlq-Deliveries"
HEADER_DLQ_ERROR = "Aifleet-Dlq-Error"
HEADER_DLQ_MSG_ID = "Aifleet-Dlq-Msg-Id"


class Subject(NamedTuple):
    """A parsed fleet subject."""

    tenant: str
    kind: str
    component: str
    name: str


def is_valid_tenant(tenant: str) -> bool:
    return _TENANT.match(tenant) is not None


def check_tenant(tenant: str) -> str:
    """The tenant, or `BadRequest` when it is not a valid subject token."""
    if not is_valid_tenant(tenant):
        raise BadRequest(
            "invalid tenant token", details={"tenant": tenant[:80], "pattern": TENANT_PATTERN}
        )
    return tenant


def check_name(name: str) -> str:
    """Component, op and event names: lowercase snake_case tokens."""
    if not _NAME.match(name):
        raise ValueError(f"invalid component/op/event name {name!r}")
    return name


def subject(tenant: str, kind: Kind, component: str, name: str) -> str:
    return f"{PREFIX}.{check_tenant(tenant)}.{kind}.{component}.{name}"


def request_subject(tenant: str, component: str, op: str) -> str:
    return subject(tenant, "req", component, op)


def job_subject(tenant: str, component: str, op: str) -> str:
    return subject(tenant, "job", component, op)


def event_subject(tenant: str, component: str, event: str) -> str:
    return subject(tenant, "evt", component, event)


def dlq_subject(tenant: str, component: str, op: str) -> str:
    return subject(tenant, "dlq", component, op)


def dead_letter_subject(tenant_token: str, component: str, op: str) -> str:
    """Where a failed job goes. The tenant token is taken as the job's subject had it, unchecked,
    so that a job published under an invalid tenant token is dead-lettered too."""
    return f"{PREFIX}.{tenant_token}.dlq.{component}.{op}"


def listen_subject(kind: Kind, component: str, name: str = ">") -> str:
    """What a worker subscribes to: every tenant's `kind` subjects for one component."""
    return f"{PREFIX}.*.{kind}.{component}.{name}"


def filter_subject(
    kind: Kind, tenant: str | None = None, component: str | None = None, name: str | None = None
) -> str:
    """A wildcard filter for replay and inspection; None means any."""
    if tenant is not None:
        check_tenant(tenant)
    parts = [PREFIX, tenant or "*", kind, component or "*", name or "*"]
    if name is None and component is None:
        parts[-2:] = [">"]
    elif name is None:
        parts[-1] = ">"
    return ".".join(parts)


def template(kind: Kind, component: str, name: str) -> str:
    """The subject with the tenant left as a placeholder: span names, metric labels, docs."""
    return f"{PREFIX}.{{tenant}}.{kind}.{component}.{name}"


def split(subj: str) -> Subject | None:
    """The tokens of a fleet subject, its tenant not yet checked; None if it is not one."""
    parts = subj.split(".")
    if len(parts) != 6 or f"{parts[0]}.{parts[1]}" != PREFIX:
        return None
    return Subject(parts[2], parts[3], parts[4], parts[5])


def parse(subj: str) -> Subject:
    """Split a fleet subject; `BadRequest` if it is not one or its tenant token is invalid."""
    found = split(subj)
    if found is None:
        raise BadRequest("not an aifleet subject", details={"subject": subj[:200]})
    check_tenant(found.tenant)
    return found


def tenant_of(subj: str) -> str:
    """The checked tenant of a subject a worker subscribed to (`ai.v1.<tenant>.…`): the one
    token a request's hot path needs, without splitting the rest."""
    return check_tenant(subj.split(".", 3)[2])


def queue_group(component: str) -> str:
    return component


def job_consumer(component: str) -> str:
    """Durable pull consumer on AI_JOBS through which one component's workers share its jobs."""
    return f"{component}-jobs"


def event_consumer(component: str) -> str:
    """Durable pull consumer on AI_EVENTS through which one component's workers share the
    events it consumes (`Component(events=...)`)."""
    return f"{component}-events"


def service_name(component: str) -> str:
    """The NATS micro service name of a component (what `nats micro ls` shows)."""
    return f"aifleet-{component}"


def cache_key_prefix(tenant: str) -> str:
    """Redis key prefix of a tenant's cache entries; the braces keep a tenant in one slot."""
    return f"aifleet:cache:{{{check_tenant(tenant)}}}:"


def cache_stats_key(tenant: str) -> str:
    return f"aifleet:cache-stats:{{{check_tenant(tenant)}}}"


def gateway_usage_prefix(tenant: str) -> str:
    """Redis key prefix of a tenant's gateway usage counters (requests, tokens, spend), shared
    by every gateway replica."""
    return f"aifleet:gateway-usage:{{{check_tenant(tenant)}}}:"


# JetStream Object Store bucket of the fleet's files; a tenant's objects are `<tenant>/<name>`.
FILES_BUCKET = "AIFLEET_FILES"


def file_prefix(tenant: str) -> str:
    """The part of the files bucket that belongs to a tenant."""
    return f"{check_tenant(tenant)}/"


def file_object(tenant: str, name: str) -> str:
    """The bucket's name of a tenant's file (`name` is checked by the files resource)."""
    return file_prefix(tenant) + name


# Redis list of llm_operation events JetStream did not take, published again by the gateway.
GATEWAY_OUTBOX_KEY = "aifleet:gateway-outbox"
# Exact-response-cache keys of the gateway inside the tenant's cache (through the cache component).
GATEWAY_CACHE_KEY_PREFIX = "gateway:response:"
