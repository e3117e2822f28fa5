"""Registry handlers: list, read, point aliases, delete. Every write stages its events in the
same transaction (the kit's outbox) and publishes them after the commit."""

from __future__ import annotations

from schemas.errors import BadRequest, Conflict, NotFound
from schemas.v1.ml_pb2 import (
    DeleteMlModelRequest,
    DeleteMlModelResponse,
    DeployModelRequest,
    GetMlModelRequest,
    GetMlModelResponse,
    ListMlModelsRequest,
    ListMlModelsResponse,
    MlAliasMovedEvent,
    MlAliasResponse,
    MlModelDeletedEvent,
    RemoveModelAliasRequest,
    SetModelAliasRequest,
)
from subjects.events import ML_ALIAS_MOVED, ML_MODEL_DELETED
from workers.ml import convert
from workers.ml.models import ModelCache
from workers.ml.reference import ModelRef, check_alias, check_version, parse
from workers.ml.resolutions import Resolutions
from workers.ml.store import AliasedVersion, MlStore, NotFoundError
from workers.runtime import paging
from workers.runtime import validation as check
from workers.runtime.context import Context
from workers.runtime.files import FileStore
from workers.runtime.outbox import Outbox


def not_found(ref: ModelRef | str) -> NotFound:
    return NotFound(f"model {ref} not found", details={"field": "model_id"})


class RegistryHandlers:
    store: MlStore
    files: FileStore
    outbox: Outbox
    cache: ModelCache
    resolutions: Resolutions

    async def list_models(self, ctx: Context, req: ListMlModelsRequest) -> ListMlModelsResponse:
        prefix = check.text(req.name_prefix, "name_prefix", max_chars=128, multiline=False)
        page = paging.start(ctx.tenant, req.page, query={"prefix": prefix})
        after = str(page.after[0]) if page.after else None
        rows = await self.store.list_models(
            ctx.tenant, prefix=prefix, after=after, limit=page.size + 1
        )
        kept, reply = paging.finish(ctx.tenant, page, rows, lambda r: (r.name,))
        return ListMlModelsResponse(models=[convert.summary(r) for r in kept], page=reply)

    async def get_model(self, ctx: Context, req: GetMlModelRequest) -> GetMlModelResponse:
        ref = parse(req.model_id)
        versions = await self.store.versions(ctx.tenant, ref)
        if not versions:
            raise not_found(ref)
        aliases = await self.store.aliases(ctx.tenant, ref.name)
        return GetMlModelResponse(
            name=ref.name, versions=[convert.version(v) for v in versions], aliases=aliases
        )

    async def deploy(self, ctx: Context, req: DeployModelRequest) -> MlAliasResponse:
        ref = parse(req.model_id)
        if ref.alias is not None:
            raise BadRequest("deploy a name or name/version", details={"field": "model_id"})
        version = check_version(req.version) if req.version else ref.version
        alias = check_alias(req.alias) if req.alias else "production"
        return await self._point(ctx, ref.name, alias, version)

    async def set_alias(self, ctx: Context, req: SetModelAliasRequest) -> MlAliasResponse:
        ref = parse(req.model_id)
        if not ref.bare:
            raise BadRequest("model_id must be a name here", details={"field": "model_id"})
        return await self._point(ctx, ref.name, check_alias(req.alias), check_version(req.version))

    async def _point(
        self, ctx: Context, name: str, alias: str, version: int | None
    ) -> MlAliasResponse:
        async with self.store.pool.acquire() as conn, conn.transaction():
            try:
                now, previous = await self.store.set_alias(conn, ctx.tenant, name, alias, version)
            except NotFoundError:
                raise not_found(f"{name}/{version}" if version else name) from None
            staged = []
            if now != previous:
                event = MlAliasMovedEvent(
                    name=name, alias=alias, version=now, previous_version=previous
                )
                staged.append(await self.outbox.stage(conn, ctx, ML_ALIAS_MOVED, event))
        self.resolutions.forget(ctx.tenant, name)
        await self.outbox.publish(staged)
        return MlAliasResponse(name=name, alias=alias, version=now, previous_version=previous)

    async def remove_alias(self, ctx: Context, req: RemoveModelAliasRequest) -> MlAliasResponse:
        ref = parse(req.model_id)
        if not ref.bare:
            raise BadRequest("model_id must be a name here", details={"field": "model_id"})
        alias = check_alias(req.alias)
        async with self.store.pool.acquire() as conn, conn.transaction():
            try:
                previous = await self.store.remove_alias(conn, ctx.tenant, ref.name, alias)
            except NotFoundError:
                raise NotFound(
                    f"alias {ref.name}@{alias} not found", details={"field": "alias"}
                ) from None
            event = MlAliasMovedEvent(name=ref.name, alias=alias, previous_version=previous)
            staged = await self.outbox.stage(conn, ctx, ML_ALIAS_MOVED, event)
        self.resolutions.forget(ctx.tenant, ref.name)
        await self.outbox.publish(staged)
        return MlAliasResponse(name=ref.name, alias=alias, version=0, previous_version=previous)

    async def delete_model(self, ctx: Context, req: DeleteMlModelRequest) -> DeleteMlModelResponse:
        ref = parse(req.model_id)
        if ref.alias is not None:
            raise BadRequest(
                "delete a name or name/version, not an alias", details={"field": "model_id"}
            )
        if req.version and ref.version is not None:
            raise BadRequest("give the version once", details={"field": "version"})
        version = check_version(req.version) if req.version else ref.version
        async with self.store.pool.acquire() as conn, conn.transaction():
            try:
                versions, aliases, objects = await self.store.delete(
                    conn, ctx.tenant, ref.name, version, force=req.force
                )
            except NotFoundError:
                raise not_found(ref) from None
            except AliasedVersion as exc:
                raise Conflict(
                    f"aliases point at this version: {exc}; pass force to remove them",
                    details={"field": "force", "aliases": exc.aliases},
                ) from None
            deleted = MlModelDeletedEvent(
                name=ref.name, versions=versions, all_versions=version is None
            )
            staged = [await self.outbox.stage(conn, ctx, ML_MODEL_DELETED, deleted)]
            for alias, pointed in aliases:
                moved = MlAliasMovedEvent(name=ref.name, alias=alias, previous_version=pointed)
                staged.append(await self.outbox.stage(conn, ctx, ML_ALIAS_MOVED, moved))
        self.resolutions.forget(ctx.tenant, ref.name)
        await self.outbox.publish(staged)
        self.cache.drop(ctx.tenant, ref.name, version)
        for name in objects:
            try:
                await self.files.delete(ctx.tenant, name)
            except Exception as exc:  # an orphaned object, never a dangling version
                ctx.log.warning("artifact not deleted", object=name, error=type(exc).__name__)
        return DeleteMlModelResponse(
            name=ref.name, deleted_versions=versions, removed_aliases=[a for a, _ in aliases]
        )
