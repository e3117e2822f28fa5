"""`aifleet up` on a fresh directory with no configuration, used as the README says."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from aifleet.embedded import free_port
from tests.support.fleet_up import clean_env, interrupt


async def cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifleet.cli", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_up_then_embed_returns_a_384_dimension_vector(postgres_dir: Path) -> None:
    """No key, no network, no configuration: `aifleet up`, then `aifleet call gateway.embed`
    gives a unit 384-dimension vector, and `gateway.generate` the offline model's reply."""
    nats_port, redis_port = free_port(), free_port()
    env = clean_env()
    up = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "aifleet.cli", "up",
        "--nats-port", str(nats_port), "--redis-port", str(redis_port), "--bridge-port", "0",
        cwd=postgres_dir, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert up.stdout is not None
    try:
        seen: list[str] = []
        async with asyncio.timeout(90):
            while not any("aifleet is up" in line for line in seen):
                line = (await up.stdout.readline()).decode()
                assert line, "aifleet up exited: " + "".join(seen[-20:])
                seen.append(line)
        call_env = {**env, "NATS_URL": f"nats://127.0.0.1:{nats_port}"}
        code, out = await cli(
            "call", "gateway.embed", '{"texts":["hello"]}', env=call_env, cwd=postgres_dir
        )
        assert code == 0, out
        (embedding,) = json.loads(out)["embeddings"]
        vector = np.array(embedding["values"])
        assert vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-3
        code, out = await cli(
            "call", "gateway.generate", '{"prompt":"hello"}', env=call_env, cwd=postgres_dir
        )
        assert code == 0, out
        assert "offline model" in json.loads(out)["message"]["content"]
    finally:
        await interrupt(up)
