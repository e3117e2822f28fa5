"""Permissions as this component enforces them.

The user is the request's X-User-ID (set by the bridge from the verified token). A request
without one is a tenant-level call (a component or an operator holding the tenant's NATS
credentials: NATS permissions are the tenant boundary) and is not restricted. A user needs the
operation's permission, or admin, on the agent or tool (a grant on that id or on "*"); checks
read the grants table on every request, so a revoke takes effect with its commit.
"""

from __future__ import annotations

from schemas.errors import BadRequest, NotFound, PermissionDenied
from workers.agent.definitions import check_id
from workers.agent.store import PERMISSIONS, AgentStore
from workers.runtime.context import Context

KINDS = ("agent", "tool")


def user_of(ctx: Context) -> str:
    """The caller's user id ("" for a tenant-level call)."""
    return ctx.user_id or ""


async def require(
    ctx: Context, store: AgentStore, kind: str, resource_id: str, permission: str
) -> None:
    user = user_of(ctx)
    if not user:
        return
    if not await store.holds(ctx.tenant, user, kind, resource_id, permission):
        # The same answer whether or not the resource exists: ids are not probed this way.
        raise PermissionDenied(
            f"user may not {permission} this {kind}",
            details={"resource_type": kind, "resource_id": resource_id, "permission": permission},
        )


async def require_existing(
    ctx: Context, store: AgentStore, kind: str, resource_id: str, permission: str, exists: bool
) -> None:
    """403 without the permission, then 404 when missing (a user holding the permission on
    "*" learns nothing more than that the id is free)."""
    await require(ctx, store, kind, resource_id, permission)
    if not exists:
        raise NotFound(f"{kind} not found", details={"field": f"{kind}_id"})


async def may_create(ctx: Context, store: AgentStore, kind: str, open_create: bool) -> None:
    if open_create:
        return
    await require(ctx, store, kind, "*", "create")


def check_grant_fields(kind: str, resource_id: str, user_id: str, permission: str) -> None:
    if kind not in KINDS:
        raise BadRequest("resource_type must be agent or tool", details={"field": "resource_type"})
    if resource_id != "*":
        check_id(resource_id, "resource_id")
    check_id(user_id, "user_id")
    if permission not in PERMISSIONS:
        raise BadRequest(
            f"permission must be one of {', '.join(PERMISSIONS)}", details={"field": "permission"}
        )
