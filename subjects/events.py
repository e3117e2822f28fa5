"""Every event of the fleet, declared once: `ai.v1.<tenant>.evt.<component>.<event>`.

Publishers (`ctx.emit`, the outbox) and consumers (`Component(events=...)`, replay filters) take
these names, never strings, so an event is spelled in one place. Keep them grouped by component.
"""

from __future__ import annotations

from typing import NamedTuple

from subjects import check_name


class EventName(NamedTuple):
    """One event: the component that publishes it and its name within that component."""

    component: str
    event: str

    def __str__(self) -> str:
        return f"{self.component}.{self.event}"


def event_name(component: str, event: str) -> EventName:
    return EventName(check_name(component), check_name(event))


AGENT_RUN_FINISHED = event_name("agent", "run_finished")
AGENT_RUN_STEP = event_name("agent", "run_step")
AGENT_TASK_PROGRESS = event_name("agent", "task_progress")

CACHE_INVALIDATED = event_name("cache", "invalidated")

GATEWAY_LLM_OPERATION = event_name("gateway", "llm_operation")

GENERATOR_DRAFT_APPROVED = event_name("generator", "draft_approved")

INGESTION_PROGRESS = event_name("ingestion", "progress")
INGESTION_FILE_INGESTED = event_name("ingestion", "file_ingested")
INGESTION_FILE_FAILED = event_name("ingestion", "file_failed")

LLMOPS_BUDGET_EXCEEDED = event_name("llmops", "budget_exceeded")

ML_TRAINING_PROGRESS = event_name("ml", "training_progress")
ML_TRAINING_COMPLETED = event_name("ml", "training_completed")
ML_TRAINING_FAILED = event_name("ml", "training_failed")
ML_ALIAS_MOVED = event_name("ml", "alias_moved")
ML_MODEL_DELETED = event_name("ml", "model_deleted")

PROMPT_TEMPLATE_CREATED = event_name("prompt", "template_created")
PROMPT_LABEL_MOVED = event_name("prompt", "label_moved")
PROMPT_TEMPLATE_DELETED = event_name("prompt", "template_deleted")

RAG_DOCUMENT_INGESTED = event_name("rag", "document_ingested")
RAG_DOCUMENT_DELETED = event_name("rag", "document_deleted")
RAG_DOCUMENT_PROGRESS = event_name("rag", "document_progress")
