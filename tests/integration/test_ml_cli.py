"""`aifleet ml watch` follows a training to its end and prints it; `aifleet call ml.train`
starts one."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from aifleet.embedded import EmbeddedNats, EmbeddedPostgres
from tests.integration.test_cli import aifleet
from tests.support.fleet import running_worker
from tests.support.ml import churn_rows
from workers.ml import service as ml
from workers.runtime.worker import Worker


@pytest.fixture(scope="module")
async def worker(nats_server: EmbeddedNats, postgres: EmbeddedPostgres) -> AsyncIterator[Worker]:
    async with running_worker([ml.component], nats_server.url, database_url=postgres.dsn) as w:
        yield w


async def test_call_starts_a_training_and_watch_prints_it_finished(
    nats_server: EmbeddedNats, worker: Worker
) -> None:
    """call ml.train answers queued; watch exits 0 with the completed training as JSON."""
    tenant = f"c{uuid.uuid4().hex[:10]}"
    body = {
        "name": "churn",
        "model_type": "logistic_regression",
        "target": "churned",
        "training_data": {"rows": churn_rows(80)},
    }
    code, out, err = await aifleet(
        nats_server.url, "call", "ml.train", json.dumps(body), "--tenant", tenant
    )
    assert code == 0, err
    training_id = json.loads(out)["training_id"]
    code, out, err = await aifleet(nats_server.url, "ml", "watch", training_id, "--tenant", tenant)
    assert code == 0, err
    done = json.loads(out)
    assert (done["status"], done["version"]) == ("completed", 1)
    code, _, err = await aifleet(nats_server.url, "ml", "watch", "nope", "--tenant", tenant)
    assert code == 4
    assert "not found" in err
