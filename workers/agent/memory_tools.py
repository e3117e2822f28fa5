"""Letta-style memory tools: core memory blocks in the system prompt, edited by the agent;
archival memory (pgvector) it writes and searches; recall over the user's past sessions.

Core blocks are shown inside the system prompt as `<label>` sections with their limits, so the
model knows what it remembers and how much room is left; an edit that would pass a block's
limit is refused with the reason.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from schemas.v1.gateway_pb2 import EmbedRequest
from schemas.v1.gateway_rpc import GatewayService
from workers.agent.calls import ToolSpec
from workers.agent.loop import ToolResult

if TYPE_CHECKING:
    from workers.agent.toolbox import Toolbox
    from workers.runtime.context import Context

DEFAULT_BLOCK_LIMIT = 2000
_TEXT = {"type": "string", "minLength": 1, "maxLength": 20_000}


async def embed(ctx: Context, model: str, agent_id: str, text: str) -> list[float]:
    """One text's embedding through gateway.embed (the agent named for LLMOps)."""
    reply = await ctx.call(
        GatewayService.Embed, EmbedRequest(model=model, texts=[text], agent_id=agent_id)
    )
    return list(reply.embeddings[0].values)


def _spec(name: str, description: str, properties: dict[str, Any]) -> ToolSpec:
    schema = {
        "type": "object",
        "properties": properties,
        "required": sorted(properties),
        "additionalProperties": False,
    }
    return ToolSpec(f"memory:{name}", name, description, schema, "memory", {})


def specs(memory: dict[str, Any]) -> list[ToolSpec]:
    out = []
    labels = [b["label"] for b in memory.get("core_blocks") or []]
    if labels:
        label = {"type": "string", "enum": labels}
        out.append(
            _spec(
                "core_memory_append",
                "Append text to one of your core memory blocks (always in your context).",
                {"label": label, "content": _TEXT},
            )
        )
        out.append(
            _spec(
                "core_memory_replace",
                "Replace the first occurrence of old_content in a core memory block.",
                {"label": label, "old_content": _TEXT, "new_content": {"type": "string"}},
            )
        )
    if memory.get("archival"):
        out.append(
            _spec(
                "archival_memory_insert",
                "Store a fact in long-term memory for later searches.",
                {"content": _TEXT},
            )
        )
        out.append(
            _spec(
                "archival_memory_search",
                "Search long-term memory by meaning; returns the closest facts.",
                {"query": _TEXT},
            )
        )
    if memory.get("recall"):
        out.append(
            _spec(
                "conversation_search",
                "Search your past conversations with this user by keywords.",
                {"query": _TEXT},
            )
        )
    return out


def block_limit(block: dict[str, Any]) -> int:
    return int(block.get("limit_chars") or DEFAULT_BLOCK_LIMIT)


def system_prompt(base: str, blocks: list[dict[str, Any]], stored: dict[str, str]) -> str:
    sections = []
    for block in blocks:
        value = stored.get(block["label"], block.get("value", ""))
        sections.append(
            f'<{block["label"]} chars="{len(value)}/{block_limit(block)}"'
            f' description="{escape(block.get("description", ""), {chr(34): "&quot;"})}">\n'
            f"{escape(value)}\n</{block['label']}>"
        )
    memory = "<core_memory>\n" + "\n".join(sections) + "\n</core_memory>"
    return f"{base}\n\n{memory}" if base else memory


async def run(box: Toolbox, name: str, args: dict[str, Any]) -> ToolResult:
    tenant, agent_id, user = box.ctx.tenant, box.agent_id, box.user
    store = box.memory_store
    if name in ("core_memory_append", "core_memory_replace"):
        block = next(b for b in box.memory.get("core_blocks") or [] if b["label"] == args["label"])
        value = await store.edit_block(
            tenant,
            agent_id,
            user,
            block["label"],
            block.get("value", ""),
            block_limit(block),
            append=args.get("content", ""),
            old=args.get("old_content", ""),
            new=args.get("new_content", ""),
        )
        if value is None:
            return ToolResult(
                f"not changed: the text was not found or the block would pass its limit of"
                f" {block_limit(block)} characters",
                is_error=True,
            )
        box.memory_edited()
        return ToolResult(json.dumps({"label": block["label"], "chars": len(value)}))
    if name == "archival_memory_insert":
        vector = await embed(box.ctx, box.settings.embedding_model, agent_id, args["content"])
        row, created = await store.insert(tenant, agent_id, user, args["content"], {}, vector)
        return ToolResult(json.dumps({"memory_id": row["memory_id"], "created": created}))
    if name == "archival_memory_search":
        vector = await embed(box.ctx, box.settings.embedding_model, agent_id, args["query"])
        rows = await store.search(tenant, agent_id, user, vector, 5)
        found = [{"text": r["text"], "score": round(float(r["score"]), 4)} for r in rows]
        return ToolResult(json.dumps(found, ensure_ascii=False))
    rows = await box.runs_store.recall(tenant, agent_id, user, args["query"], 5)
    found = [
        {
            "session_id": r["session_id"],
            "role": json.loads(r["message"])["role"],
            "content": json.loads(r["message"]).get("content", "")[:1000],
        }
        for r in rows
    ]
    return ToolResult(json.dumps(found, ensure_ascii=False))
