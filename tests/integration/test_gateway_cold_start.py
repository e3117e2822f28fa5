"""Starting the gateway costs the litellm import and nothing more: no network, no `.env`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.run_worker import REPO_ROOT

# Runs in a fresh interpreter whose working directory holds a `.env` with a provider key: every
# connection that is not to loopback is refused and recorded, then the router is built and
# asked for a completion and an embedding with the default (offline) models.
PROBE = """
import asyncio, json, os, socket, sys

attempts = []
real_connect = socket.socket.connect

def guarded(self, address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
        attempts.append(str(address))
        raise OSError("network disabled by the test")
    return real_connect(self, address)

socket.socket.connect = guarded
real_getaddrinfo = socket.getaddrinfo

def no_dns(host, *args, **kwargs):
    if host not in ("127.0.0.1", "::1", "localhost", None):
        attempts.append(f"dns:{host}")
        raise OSError("network disabled by the test")
    return real_getaddrinfo(host, *args, **kwargs)

socket.getaddrinfo = no_dns

from workers.gateway.config import GatewaySettings, load_config
from workers.gateway.router import ModelRouter

async def main():
    router = ModelRouter(load_config(GatewaySettings()))
    reply = await router.complete("offline", {"messages": [{"role": "user", "content": "hi"}]}, 10)
    vectors = await router.embed("all-minilm-l6-v2", ["hello"], None, 10)
    print(json.dumps({
        "attempts": attempts,
        "dotenv_key": os.environ.get("OPENAI_API_KEY"),
        "reply": reply.choices[0].message.content,
        "dims": len(vectors.data[0]["embedding"]),
        "litellm_in_sys": "litellm" in sys.modules,
    }))

asyncio.run(main())
"""


def test_gateway_starts_offline_without_reading_dotenv(tmp_path: Path) -> None:
    """No connection leaves the machine and the `.env` in the working directory is ignored."""
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO_ROOT),
        "HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["attempts"] == []
    assert result["dotenv_key"] is None
    assert "offline model" in result["reply"]
    assert result["dims"] == 384


def test_discovering_components_does_not_import_litellm() -> None:
    """The CLI, the bridge and other workers import the gateway's module without litellm."""
    probe = (
        "import sys, workers.components as c\n"
        "[c.load(name) for name in c.available()]\n"
        "print('litellm' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "False"
