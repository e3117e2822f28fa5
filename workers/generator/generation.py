"""Drafting a definition: gateway.generate with the agent component's JSON Schema as the
response format, the reply checked against the schema, the generator's bounds and the fleet,
one repair round carrying the errors, then a 422 listing them. Nothing the model writes is
run: it is parsed as JSON and checked."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from schemas.errors import BadRequest, DeadlineExceeded, Unavailable, Unprocessable
from schemas.v1.agent_pb2 import AgentDefinition, ToolDefinition
from schemas.v1.cache_pb2 import GetRequest, SetRequest
from schemas.v1.cache_rpc import CacheService
from schemas.v1.gateway_pb2 import CacheControl, GenerateRequest, ResponseFormat
from schemas.v1.gateway_rpc import GatewayService
from workers.generator import drafting, fleet, refusals
from workers.generator.settings import GeneratorSettings
from workers.runtime import validation as check
from workers.runtime.context import Context

MESSAGES = {"agent": AgentDefinition, "tool": ToolDefinition}
_VALIDATORS: dict[str, Draft202012Validator] = {}
_MAX_VALIDATORS = 8


@dataclass(frozen=True)
class Generated:
    spec: dict[str, Any]
    model_calls: int
    cached: bool


def refuse(reasons: list[str], what: str) -> Unprocessable:
    return Unprocessable(
        f"{what} is refused: {'; '.join(reasons)[:500]}",
        details={"stage": "refused", "reasons": reasons},
    )


class Drafter:
    def __init__(self, settings: GeneratorSettings) -> None:
        self.settings = settings

    async def draft(
        self,
        ctx: Context,
        kind: str,
        prompt: str,
        model: str,
        config: dict[str, Any],
        *,
        feedback: Sequence[str] = (),
        previous: dict[str, Any] | None = None,
    ) -> Generated:
        """A definition the schema, the bounds and the fleet accept, or Unprocessable."""
        schema = await fleet.definition_schema(ctx, kind)
        validator = validator_for(schema)
        known = await fleet.catalog(ctx)
        if model and model not in known.models:
            raise BadRequest(
                f"llm_model {model!r} is not a chat model alias of the gateway",
                details={"field": "llm_model", "models": known.models},
            )
        messages = drafting.messages(
            kind, prompt, config, known, feedback=feedback, previous=previous
        )
        request = GenerateRequest(
            model=model,
            messages=messages,
            max_tokens=self.settings.max_output_tokens,
            temperature=self.settings.temperature,
            cache=CacheControl(skip=True),  # the generator's cache decides reuse
        )
        request.response_format.CopyFrom(_response_format(kind, schema))
        errors: list[str] = []
        for calls in (1, 2):
            reply = await ctx.call(GatewayService.Generate, request)
            content = reply.message.content
            spec, errors = drafting.parse(content)
            if spec is not None:
                spec = drafting.completed(kind, spec)
                errors = await self.errors(ctx, kind, spec, validator, known)
            if not errors and spec is not None:
                return Generated(normalized(kind, spec), calls, cached=False)
            del request.messages[len(messages) :]
            request.messages.extend(drafting.repair(content[:20_000], errors))
        raise Unprocessable(
            f"the model's {kind} definition is invalid after a repair round: "
            + "; ".join(errors)[:500],
            details={"stage": "validation", "errors": errors},
        )

    async def errors(
        self,
        ctx: Context,
        kind: str,
        spec: dict[str, Any],
        validator: Draft202012Validator,
        known: drafting.Catalog,
    ) -> list[str]:
        """Why the definition cannot be kept; refusals raise at once (never repaired)."""
        refused = refusals.definition_reasons(spec)
        if refused:
            raise refuse(refused, f"the generated {kind} definition")
        found = drafting.schema_errors(validator, spec)
        if found:
            return found
        found = drafting.limit_errors(kind, spec, self.settings)
        try:
            normalized(kind, spec)
        except json_format.ParseError as exc:
            found.append(f"spec: {exc}"[:300])
            return found
        return found + await fleet.errors(ctx, kind, spec, known)

    async def cached(self, ctx: Context, key: str, kind: str) -> Generated | None:
        """The definition stored under key, if it still passes every check for this caller;
        None on a miss, and when the cache component is down (the model is asked then)."""
        try:
            hit = await ctx.call(CacheService.Get, GetRequest(key=key))
        except (Unavailable, DeadlineExceeded) as exc:  # a cache is an optimisation
            ctx.log.warning("draft cache unavailable", error=str(exc))
            return None
        if not hit.found or hit.WhichOneof("payload") != "value":
            return None
        spec = check.json_value(hit.value, "value", max_bytes=1024 * 1024)
        if not isinstance(spec, dict):
            return None
        validator = validator_for(await fleet.definition_schema(ctx, kind))
        known = await fleet.catalog(ctx)
        try:
            problems = await self.errors(ctx, kind, spec, validator, known)
        except Unprocessable:
            return None
        return None if problems else Generated(spec, 0, cached=True)

    async def remember(self, ctx: Context, key: str, spec: dict[str, Any]) -> None:
        request = SetRequest(key=key, ttl_seconds=self.settings.cache_ttl_seconds)
        request.value.struct_value.CopyFrom(check.to_struct(spec))
        try:
            await ctx.call(CacheService.Set, request)
        except (Unavailable, DeadlineExceeded) as exc:
            ctx.log.warning("draft cache unavailable", error=str(exc))


def validator_for(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator of the schema, checked once per distinct schema (checking a schema costs
    ~10 ms of CPU; the agent component's two schemas change only with its release)."""
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
    found = _VALIDATORS.get(digest)
    if found is None:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError:
            raise Unavailable("the agent component's definition schema is invalid") from None
        if len(_VALIDATORS) >= _MAX_VALIDATORS:
            _VALIDATORS.clear()
        found = _VALIDATORS[digest] = Draft202012Validator(schema)
    return found


def normalized(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The definition as the agent component will store it (proto3 JSON, defaults dropped)."""
    message = json_format.ParseDict(json.loads(json.dumps(spec)), MESSAGES[kind]())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _response_format(kind: str, schema: dict[str, Any]) -> ResponseFormat:
    name = "AgentDefinition" if kind == "agent" else "ToolDefinition"
    fmt = ResponseFormat(type="json_schema")
    fmt.json_schema.update({"name": name, "schema": schema, "strict": False})
    return fmt
