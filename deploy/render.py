"""Write deploy/k8s/base/components/ from deploy/components.yaml (`make deploy`).

Every component's Deployment, PodDisruptionBudget and KEDA ScaledObject share one definition,
the template below; deploy/components.yaml says what each has of its own (image extras,
resources, Secrets, variables, mounted ConfigMaps), and the component's own declaration
(`Component(jobs=..., events=...)`) which durable consumer KEDA scales it on. The directory's
kustomization.yaml lists every file, so the base lists the directory once. The output is
committed, so `kubectl apply -k deploy/k8s/base` needs nothing but a checkout;
tests/unit/test_deploy.py fails when it is stale, and checks the rendered objects against the
code. `--check` only compares.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import yaml

from subjects import STREAM_EVENTS, STREAM_JOBS, event_consumer, job_consumer

DEPLOY = Path(__file__).resolve().parent
COMPONENTS = DEPLOY / "components.yaml"
OUT = DEPLOY / "k8s" / "base" / "components"  # with its kustomization.yaml listing them
KNOWN = frozenset(
    {
        "extras", "about", "cpu", "memory", "resources_note", "min_ready_seconds", "start_note",
        "secrets", "env", "config_maps", "jobs_lag", "events_lag", "tmp",
    }
)  # fmt: skip
WIDTH = 96  # the manifests' comment lines


@dataclass(frozen=True)
class Spec:
    """One entry of deploy/components.yaml, with the defaults filled in."""

    name: str
    extras: str
    about: str = ""
    cpu: str = "100m"
    memory: tuple[str, str] = ("128Mi", "256Mi")
    resources_note: str = ""
    min_ready_seconds: int = 10
    start_note: str = "a worker connects and subscribes within a few seconds."
    secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    config_maps: dict[str, str] = field(default_factory=dict)
    jobs_lag: int = 32
    events_lag: int = 1000
    tmp: str = ""  # a size: /tmp on the node's disk, that large; "": 16 MiB of memory

    @classmethod
    def read(cls, name: str, entry: Any) -> Spec:
        """The entry of `name`, refused (ValueError) if it is not what the file's header says."""
        if not isinstance(entry, dict) or not isinstance(entry.get("extras"), str):
            raise ValueError(f"{COMPONENTS.name}: {name} needs at least `extras: <extras>`")
        unknown = set(entry) - KNOWN
        if unknown:
            raise ValueError(f"{COMPONENTS.name}: {name}: unknown keys {sorted(unknown)}")
        values = dict(entry)
        if "memory" in values:
            request, limit = values["memory"]
            values["memory"] = (str(request), str(limit))
        for own in [*values.get("secrets", ()), *(values.get("config_maps") or {})]:
            if not own.startswith(f"aifleet-{name}-"):
                raise ValueError(f"{name}: its own objects are named aifleet-{name}-..., {own}")
        values["secrets"] = tuple(values.get("secrets", ()))
        values["env"] = {str(k): str(v) for k, v in (values.get("env") or {}).items()}
        return cls(name=name, **values)


def specs() -> dict[str, Spec]:
    entries = yaml.safe_load(COMPONENTS.read_text())
    return {name: Spec.read(name, entry) for name, entry in entries.items()}


def comment(text: str, indent: int) -> str:
    """`text` as `# ` lines at `indent`, wrapped to the repository's line length."""
    prefix = " " * indent + "# "
    lines = textwrap.wrap(" ".join(text.split()), WIDTH - len(prefix), break_on_hyphens=False)
    return "".join(f"{prefix}{line}\n" for line in lines)


def block(lines: list[str], indent: int) -> str:
    return "".join(" " * indent + line + "\n" for line in lines)


def _triggers(spec: Spec, jobs: bool, events: bool) -> str:
    found = [(STREAM_JOBS, job_consumer(spec.name), spec.jobs_lag)] if jobs else []
    if events:
        found.append((STREAM_EVENTS, event_consumer(spec.name), spec.events_lag))
    if not found:
        return comment(
            f"No nats-jetstream trigger: {spec.name} takes no jobs and consumes no events, so "
            f"neither `{job_consumer(spec.name)}` nor `{event_consumer(spec.name)}` ever exists, "
            "and for a missing consumer KEDA's nats-jetstream scaler reports the stream's last "
            "sequence number as the lag, which would scale it on other components' work.",
            4,
        )
    out = ""
    for stream, consumer, lag in found:
        kind = "jobs" if stream == STREAM_JOBS else "consumed events"
        out += comment(
            f"A backlog of {kind} adds replicas: its durable consumer {consumer} on {stream}, "
            "which every worker creates at start. Monitoring endpoint and account as in "
            "deploy/k8s/README.md.",
            4,
        )
        out += block(
            [
                "- type: nats-jetstream",
                "  metadata:",
                "    natsServerMonitoringEndpoint: nats.aifleet.svc.cluster.local:8222",
                "    account: $G",
                f"    stream: {stream}",
                f"    consumer: {consumer}",
                f'    lagThreshold: "{lag}"',
            ],
            4,
        )
    return out


def _env(spec: Spec) -> str:
    out = ""
    for secret in spec.secrets:
        out += block(["- secretRef:", f"    name: {secret}"], 12)
    if spec.env:
        out += comment(
            "Set here, these win over the ConfigMap and the Secrets (deploy/components.yaml says "
            "why each is set).",
            10,
        )
        out += block(["env:"], 10)
        for key, value in spec.env.items():
            out += block([f"- name: {key}", f"  value: {_quoted(value)}"], 12)
    return out


def _quoted(value: str) -> str:
    return yaml.safe_dump(value, default_style='"').strip()


def _mounts(spec: Spec) -> tuple[str, str]:
    mounts = volumes = ""
    for config_map, directory in spec.config_maps.items():
        volume = config_map.removeprefix(f"aifleet-{spec.name}-")
        mounts += block([f"- name: {volume}", f"  mountPath: {directory}", "  readOnly: true"], 12)
        volumes += block([f"- name: {volume}", "  configMap:", f"    name: {config_map}"], 8)
    return mounts, volumes


def render(spec: Spec, *, jobs: bool, events: bool) -> str:
    """The component's three objects as YAML text, with comments."""
    mounts, volumes = _mounts(spec)
    header = f"The {spec.name} component: `aifleet worker {spec.name}`, its disruption budget and "
    header += f"its autoscaling. {spec.about}"
    text = TEMPLATE.substitute(
        name=spec.name,
        header=comment(header, 0).rstrip("\n"),
        start_note=comment(
            "There is no readiness probe (see below), so a new pod counts as available only "
            f"after it has run this long without restarting; {spec.start_note} With "
            "maxUnavailable 0 the old pod is stopped only after that.",
            2,
        ).rstrip("\n"),
        min_ready_seconds=spec.min_ready_seconds,
        built=comment(
            f"Built with EXTRAS={spec.extras} (deploy/docker/Dockerfile); an overlay sets "
            "registry and tag.",
            10,
        ).rstrip("\n"),
        env=_env(spec).rstrip("\n"),
        resources_note=comment(spec.resources_note, 12).rstrip("\n"),
        cpu=spec.cpu,
        memory_request=spec.memory[0],
        memory_limit=spec.memory[1],
        mounts=mounts.rstrip("\n"),
        volumes=volumes.rstrip("\n"),
        triggers=_triggers(spec, jobs, events).rstrip("\n"),
        tmp_volume=(
            f"            sizeLimit: {spec.tmp}"
            if spec.tmp
            else "            medium: Memory\n            sizeLimit: 16Mi"
        ),
    )
    # A placeholder with nothing to say leaves an empty line: drop it.
    return "".join(line + "\n" for line in text.splitlines() if line)


def rendered() -> dict[Path, str]:
    """Every component's file, by path: each component found under workers/ needs its entry."""
    from workers.components import available, load

    entries = specs()
    missing = sorted(set(available()) - set(entries))
    if missing:
        raise ValueError(f"{COMPONENTS}: no entry for {', '.join(missing)} (two lines will do)")
    unknown = sorted(set(entries) - set(available()))
    if unknown:
        raise ValueError(f"{COMPONENTS}: {', '.join(unknown)} is no component under workers/")
    out = {}
    for name, spec in entries.items():
        component = load(name)
        text = render(spec, jobs=bool(component.jobs), events=bool(component.events))
        out[OUT / f"{name}.yaml"] = text
    listed = "".join(f"  - {name}.yaml\n" for name in sorted(entries))
    out[OUT / "kustomization.yaml"] = KUSTOMIZATION + listed
    return out


def stale() -> list[str]:
    """Files that differ from a fresh rendering, and rendered files no component makes."""
    fresh = rendered()
    out = [str(p) for p, text in fresh.items() if not p.is_file() or p.read_text() != text]
    return out + [str(p) for p in sorted(OUT.glob("*.yaml")) if p not in fresh]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    if parser.parse_args().check:
        problems = stale()
        if problems:
            sys.exit("stale, run `make deploy`: " + ", ".join(problems))
        print(f"deploy manifests are fresh ({len(specs())} components)")
        return
    fresh = rendered()
    for path in OUT.glob("*.yaml"):
        if path not in fresh:
            path.unlink()
    for path, text in fresh.items():
        path.write_text(text)
    print(f"wrote {len(fresh)} files in {OUT.relative_to(DEPLOY.parent)}")


KUSTOMIZATION = """\
# Written by `make deploy` (deploy/render.py): one file per entry of deploy/components.yaml.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
"""

TEMPLATE = Template(
    """\
# Written by `make deploy` (deploy/render.py) from deploy/components.yaml: edit those, not this.
$header
apiVersion: apps/v1
kind: Deployment
metadata:
  name: aifleet-$name
  labels:
    app.kubernetes.io/name: aifleet
    app.kubernetes.io/component: $name
spec:
  # No `replicas`: the ScaledObject below owns the count (through the HPA KEDA creates), and a
  # count here would reset it on every apply.
  revisionHistoryLimit: 5
$start_note
  minReadySeconds: $min_ready_seconds
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      app.kubernetes.io/name: aifleet
      app.kubernetes.io/component: $name
  template:
    metadata:
      labels:
        app.kubernetes.io/name: aifleet
        app.kubernetes.io/component: $name
    spec:
      # SIGTERM: the worker leaves discovery, stops taking requests and jobs and waits up to
      # AIFLEET_DRAIN_TIMEOUT (25 s) for in-flight work before it exits 0. This leaves 20 s
      # beyond that for closing connections before the kubelet sends SIGKILL.
      terminationGracePeriodSeconds: 45
      automountServiceAccountToken: false
      # Service links would add NATS_PORT, NATS_SERVICE_HOST, ... to the environment.
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: aifleet
              app.kubernetes.io/component: $name
      containers:
        - name: worker
$built
          image: aifleet-$name
          args: ["worker", "$name"]
          envFrom:
            - configMapRef:
                name: aifleet-config
            - secretRef:
                name: aifleet-secrets
$env
          # No probes. A worker serves no HTTP, and the honest checks are costly or wrong:
          # an exec probe that pings the instance over NATS starts a Python interpreter (tens
          # of MiB, a CPU spike) every period, and `aifleet status` is fleet-wide. Nothing
          # depends on readiness either: no Service routes to these pods, and a worker takes
          # requests only once it has subscribed to its queue group, so a starting or stuck
          # pod receives nothing from NATS. A fatal error ends the process (restart by the
          # kubelet); a lost NATS connection is re-established by the worker itself.
          resources:
$resources_note
            requests:
              cpu: $cpu
              memory: $memory_request
            limits:
              memory: $memory_limit
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
          volumeMounts:
            - name: tmp
              mountPath: /tmp
$mounts
      volumes:
        - name: tmp
          emptyDir:
$tmp_volume
$volumes
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: aifleet-$name
spec:
  # Node drains take $name pods one at a time; the others keep answering.
  minAvailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: aifleet
      app.kubernetes.io/component: $name
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: aifleet-$name
spec:
  scaleTargetRef:
    name: aifleet-$name
  # Requests go to a core NATS queue group: nothing queues where KEDA could measure it, and
  # zero replicas would mean "no responders" for every caller. So at least two replicas, and
  # CPU as the measure of request load.
  minReplicaCount: 2
  maxReplicaCount: 10
  pollingInterval: 15
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown:
          stabilizationWindowSeconds: 300
  triggers:
    - type: cpu
      metricType: Utilization
      metadata:
        value: "70"
        containerName: worker
$triggers
"""
)


if __name__ == "__main__":
    main()
