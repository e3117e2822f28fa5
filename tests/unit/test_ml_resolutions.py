"""The per-worker cache of what a model reference names: bounded in time, per tenant,
forgotten on a move (the replica's own or another's event)."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from schemas.v1.ml_pb2 import MlAliasMovedEvent, MlModelDeletedEvent
from subjects import event_subject
from workers.ml.reference import ModelRef
from workers.ml.resolutions import Resolutions
from workers.ml.store import Serving

PROD = ModelRef("churn", alias="production")


def serving(version: int) -> Serving:
    return Serving(version, f"ml/models/churn/{version}.skops", "0" * 64, 100)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def message(subject: str, data: bytes) -> Msg:
    return Msg(NATS(), subject=subject, data=data)


def test_a_resolution_is_kept_for_the_bound_and_not_a_moment_longer() -> None:
    """Found within the bound; gone once it has passed."""
    clock = Clock()
    kept = Resolutions(1.0, clock=clock)
    kept.put("t1", PROD, serving(1), kept.epoch)
    clock.now += 0.99
    assert kept.get("t1", PROD) == serving(1)
    clock.now += 0.02
    assert kept.get("t1", PROD) is None


def test_another_tenant_never_gets_a_tenants_resolution() -> None:
    """The same model name of another tenant is a miss."""
    kept = Resolutions(5.0)
    kept.put("t1", PROD, serving(1), kept.epoch)
    assert kept.get("t2", PROD) is None
    assert kept.get("t1", PROD) == serving(1)


def test_references_are_kept_apart() -> None:
    """`churn@production`, `churn@staging` and `churn/1` are three entries."""
    kept = Resolutions(5.0)
    kept.put("t1", PROD, serving(2), kept.epoch)
    assert kept.get("t1", ModelRef("churn", alias="staging")) is None
    assert kept.get("t1", ModelRef("churn", version=2)) is None


def test_forget_drops_every_reference_of_that_model_only() -> None:
    """A move of churn's alias drops churn's entries, not another model's or tenant's."""
    kept = Resolutions(5.0)
    for tenant in ("t1", "t2"):
        kept.put(tenant, PROD, serving(1), kept.epoch)
        kept.put(tenant, ModelRef("churn", version=1), serving(1), kept.epoch)
        kept.put(tenant, ModelRef("other", alias="production"), serving(3), kept.epoch)
    kept.forget("t1", "churn")
    assert kept.get("t1", PROD) is None
    assert kept.get("t1", ModelRef("churn", version=1)) is None
    assert kept.get("t1", ModelRef("other", alias="production")) == serving(3)
    assert kept.get("t2", PROD) == serving(1)


def test_a_lookup_begun_before_a_move_is_not_kept() -> None:
    """What SQL answered before an invalidation may be the old version: not stored."""
    kept = Resolutions(5.0)
    epoch = kept.epoch
    kept.forget("t1", "churn")
    kept.put("t1", PROD, serving(1), epoch)
    assert kept.get("t1", PROD) is None


def test_a_bound_of_zero_keeps_nothing() -> None:
    """AIFLEET_ML_ALIAS_CACHE_SECONDS=0: every call resolves in SQL."""
    kept = Resolutions(0.0)
    kept.put("t1", PROD, serving(1), kept.epoch)
    assert kept.get("t1", PROD) is None


def test_the_oldest_entries_go_beyond_the_entry_limit() -> None:
    """At most max_entries resolutions are held."""
    kept = Resolutions(5.0, max_entries=2)
    for version in (1, 2, 3):
        kept.put("t1", ModelRef("churn", version=version), serving(version), kept.epoch)
    assert kept.get("t1", ModelRef("churn", version=1)) is None
    assert kept.get("t1", ModelRef("churn", version=3)) == serving(3)


async def test_an_alias_moved_event_forgets_that_tenants_model() -> None:
    """Another replica's move, seen as its event, drops the entry here."""
    kept = Resolutions(5.0)
    kept.put("t1", PROD, serving(1), kept.epoch)
    kept.put("t2", PROD, serving(1), kept.epoch)
    event = MlAliasMovedEvent(name="churn", alias="production", version=2, previous_version=1)
    await kept._moved(message(event_subject("t1", "ml", "alias_moved"), event.SerializeToString()))
    assert kept.get("t1", PROD) is None
    assert kept.get("t2", PROD) == serving(1)


async def test_a_deleted_event_forgets_the_deleted_versions() -> None:
    """A deletion elsewhere drops `churn/1` here too."""
    kept = Resolutions(5.0)
    kept.put("t1", ModelRef("churn", version=1), serving(1), kept.epoch)
    event = MlModelDeletedEvent(name="churn", versions=[1])
    await kept._deleted(
        message(event_subject("t1", "ml", "model_deleted"), event.SerializeToString())
    )
    assert kept.get("t1", ModelRef("churn", version=1)) is None


async def test_an_unreadable_event_forgets_the_whole_tenant() -> None:
    """A body that is not the event drops every model of that tenant, no other."""
    kept = Resolutions(5.0)
    kept.put("t1", ModelRef("other", alias="production"), serving(3), kept.epoch)
    kept.put("t2", PROD, serving(1), kept.epoch)
    await kept._moved(message(event_subject("t1", "ml", "alias_moved"), b"\xff\xff\xff"))
    assert kept.get("t1", ModelRef("other", alias="production")) is None
    assert kept.get("t2", PROD) == serving(1)


async def test_an_event_on_an_invalid_subject_changes_nothing() -> None:
    """A message without a valid tenant token is ignored, without raising."""
    kept = Resolutions(5.0)
    kept.put("t1", PROD, serving(1), kept.epoch)
    await kept._moved(message("ai.v1.Not A Tenant!.evt.ml.alias_moved", b""))
    assert kept.get("t1", PROD) == serving(1)
