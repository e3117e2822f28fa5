"""deploy/ agrees with the code: every component is deployable everywhere, names come from
subjects/, and every stop timeout outlasts the runtime's drain."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import render
from subjects import STREAM_EVENTS, STREAM_JOBS, event_consumer, job_consumer
from workers.components import available, load
from workers.gateway.config import OFFLINE_ALIAS, GatewaySettings, load_config
from workers.runtime.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S_BASE = DEPLOY / "k8s" / "base"
COMPOSE = DEPLOY / "docker" / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = DEPLOY / "systemd" / "aifleet-worker@.service"
TARGET = DEPLOY / "systemd" / "aifleet.target"

Doc = dict[str, Any]


# -- readers --------------------------------------------------------------------------------


def default_drain_timeout() -> float:
    """The runtime's default, not the environment's: deploy/ is written for the default."""
    value = Settings.model_fields["drain_timeout"].default
    assert isinstance(value, float)
    return value


class TemplateLoader(yaml.SafeLoader):
    """SafeLoader that also reads CloudFormation's short-form intrinsics (`!Ref`, `!If`...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Doc:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    return {f"Fn::{suffix}" if suffix != "Ref" else "Ref": value}


TemplateLoader.add_multi_constructor("!", _intrinsic)


def yaml_docs(path: Path) -> list[Doc]:
    docs = [
        doc for doc in yaml.load_all(path.read_text(), Loader=TemplateLoader) if doc is not None
    ]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: a document is not a mapping"
    return docs


def kustomize(directory: Path) -> list[Doc]:
    """The objects a Kustomize directory renders: its `resources`, followed recursively."""
    kustomization = yaml_docs(directory / "kustomization.yaml")[0]
    objects: list[Doc] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        assert path.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        objects += kustomize(path) if path.is_dir() else yaml_docs(path)
    return objects


def k8s_objects(kind: str) -> dict[str, Doc]:
    return {o["metadata"]["name"]: o for o in kustomize(K8S_BASE) if o["kind"] == kind}


def compose_services() -> dict[str, Doc]:
    services = yaml_docs(COMPOSE)[0]["services"]
    assert isinstance(services, dict)
    return services


def systemd_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file as ordered (key, value) lists; keys may repeat."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"{path}: {line!r} is outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not key=value"
        current.append((key.strip(), value.strip()))
    return sections


def values(entries: list[tuple[str, str]], key: str) -> list[str]:
    return [v for k, v in entries if k == key]


_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|hr|s|m|h)?")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def seconds(span: str | int | float) -> float:
    """A systemd time span or compose duration ("45s", "1min 30s", "1m30s", 45) in seconds."""
    if isinstance(span, int | float):
        return float(span)
    text = span.replace(" ", "")
    parts = list(_SPAN.finditer(text))
    assert "".join(p.group(0) for p in parts) == text != "", f"unreadable duration {span!r}"
    return sum(float(p.group(1)) * _UNIT_SECONDS[p.group(2) or "s"] for p in parts)


def pyproject() -> Doc:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def component_label(obj: Doc) -> str:
    labels = obj["spec"]["template"]["metadata"]["labels"]
    component = labels["app.kubernetes.io/component"]
    assert isinstance(component, str)
    return component


def jobs_trigger_problems(
    scaled_object: Doc, component: str, takes_jobs: bool, consumes_events: bool = False
) -> list[str]:
    """What is wrong with a ScaledObject's nats-jetstream triggers for `component`: one per
    durable consumer it reads (jobs on AI_JOBS, consumed events on AI_EVENTS), no other."""
    triggers = [t for t in scaled_object["spec"]["triggers"] if t["type"] == "nats-jetstream"]
    wanted = set()
    if takes_jobs:
        wanted.add((STREAM_JOBS, job_consumer(component)))
    if consumes_events:
        wanted.add((STREAM_EVENTS, event_consumer(component)))
    if not wanted:
        # KEDA reports the whole stream's last sequence as the lag of a missing consumer.
        return [f"{component} takes no jobs but has a nats-jetstream trigger"] if triggers else []
    if len(triggers) != len(wanted):
        return [
            f"{component} reads {len(wanted)} consumer(s) and needs as many nats-jetstream"
            f" triggers, has {len(triggers)}"
        ]
    problems = []
    found = set()
    for trigger in triggers:
        meta = trigger["metadata"]
        key = (meta.get("stream"), meta.get("consumer"))
        if key not in wanted:
            problems.append(
                f"{component}: trigger on {key[0]!r}/{key[1]!r}, expected one of {sorted(wanted)}"
            )
        found.add(key)
        if not str(meta.get("lagThreshold", "")).isdigit():
            problems.append(f"{component}: lagThreshold must be a whole number")
    if not problems and found != wanted:
        problems.append(f"{component}: triggers {sorted(found)}, expected {sorted(wanted)}")
    return problems


# -- tests ----------------------------------------------------------------------------------


def test_every_yaml_file_in_deploy_parses() -> None:
    """Every YAML file under deploy/ loads, and each document in it is a mapping."""
    files = sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")])
    assert len(files) >= 5, files
    for path in files:
        assert yaml_docs(path), f"{path} holds no document"


def test_kubernetes_objects_have_kind_name_and_api_version() -> None:
    """The rendered Kustomize base holds well-formed objects with unique kind/name pairs."""
    objects = kustomize(K8S_BASE)
    seen = set()
    for obj in objects:
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"duplicate {key}"
        seen.add(key)


def test_every_component_has_a_compose_service_running_it() -> None:
    """Each discovered component has a compose service running `worker <component>`."""
    services = compose_services()
    extras = set(pyproject()["project"]["optional-dependencies"])
    for name in available():
        assert name in services, f"compose.yaml has no service for component {name!r}"
        service = services[name]
        assert service["command"] == ["worker", name]
        wanted = [e for e in service["build"]["args"]["EXTRAS"].split(",") if e]
        assert set(wanted) <= extras, f"{name}: EXTRAS {wanted} are not all extras of the package"
        depends = service["depends_on"]
        assert depends["streams"]["condition"] == "service_completed_successfully"


def test_every_component_has_a_deployment_running_it() -> None:
    """Each discovered component has a Deployment running `worker <component>` with limits."""
    deployments = k8s_objects("Deployment")
    for name in available():
        deployment = deployments.get(f"aifleet-{name}")
        assert deployment is not None, f"deploy/k8s has no Deployment aifleet-{name}"
        assert component_label(deployment) == name
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["worker", name]
        resources = container["resources"]
        assert resources["requests"]["cpu"]
        assert resources["requests"]["memory"]
        assert resources["limits"]["memory"]
        refs = [next(iter(source.values()))["name"] for source in container["envFrom"]]
        assert refs[:2] == ["aifleet-config", "aifleet-secrets"], "Secret must follow ConfigMap"
        # After them, only Secrets of this component's own (the gateway's provider keys).
        for source in container["envFrom"][2:]:
            assert source["secretRef"]["name"].startswith(f"aifleet-{name}-"), source


def test_every_component_has_a_scaled_object_for_its_deployment() -> None:
    """Each discovered component has a KEDA ScaledObject targeting its Deployment."""
    scaled = k8s_objects("ScaledObject")
    for name in available():
        scaled_object = scaled.get(f"aifleet-{name}")
        assert scaled_object is not None, f"deploy/k8s has no ScaledObject aifleet-{name}"
        spec = scaled_object["spec"]
        assert spec["scaleTargetRef"]["name"] == f"aifleet-{name}"
        assert spec["minReplicaCount"] >= 1, "zero replicas leave requests with no responders"
        assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
        assert spec["triggers"], f"{name}: a ScaledObject needs a trigger"


def test_jobs_triggers_name_the_components_consumer_on_ai_jobs() -> None:
    """A component with jobs scales on its own consumer of AI_JOBS, one consuming events on its
    own consumer of AI_EVENTS; one with neither has no such trigger."""
    scaled = k8s_objects("ScaledObject")
    problems = []
    for name in available():
        component = load(name)
        problems += jobs_trigger_problems(
            scaled[f"aifleet-{name}"], name, bool(component.jobs), bool(component.events)
        )
    assert problems == []


@pytest.mark.parametrize(
    ("trigger", "takes_jobs"),
    [
        ({"stream": STREAM_JOBS, "consumer": job_consumer("other"), "lagThreshold": "8"}, True),
        ({"stream": "AI_EVENTS", "consumer": job_consumer("rag"), "lagThreshold": "8"}, True),
        ({"stream": STREAM_JOBS, "consumer": job_consumer("rag"), "lagThreshold": "8"}, False),
    ],
)
def test_jobs_trigger_check_rejects_wrong_names(trigger: dict[str, str], takes_jobs: bool) -> None:
    """The trigger check flags another component's consumer, another stream, or a trigger on a
    component without jobs."""
    scaled_object = {"spec": {"triggers": [{"type": "nats-jetstream", "metadata": trigger}]}}
    assert jobs_trigger_problems(scaled_object, "rag", takes_jobs)


def test_jobs_trigger_check_accepts_the_components_own_consumer() -> None:
    """The trigger check passes a trigger on the component's own consumer of AI_JOBS."""
    meta = {"stream": STREAM_JOBS, "consumer": job_consumer("rag"), "lagThreshold": "32"}
    scaled_object = {"spec": {"triggers": [{"type": "nats-jetstream", "metadata": meta}]}}
    assert jobs_trigger_problems(scaled_object, "rag", True) == []


def test_events_trigger_check_wants_the_components_consumer_on_ai_events() -> None:
    """An event-consuming component needs its own AI_EVENTS consumer as trigger: a jobs
    trigger, another component's consumer or no trigger at all is flagged."""
    own = {"stream": STREAM_EVENTS, "consumer": event_consumer("rag"), "lagThreshold": "100"}
    jobs = {"stream": STREAM_JOBS, "consumer": job_consumer("rag"), "lagThreshold": "100"}
    other = {**own, "consumer": event_consumer("other")}

    def scaled(*metas: dict[str, str]) -> Doc:
        return {"spec": {"triggers": [{"type": "nats-jetstream", "metadata": m} for m in metas]}}

    assert jobs_trigger_problems(scaled(own), "rag", False, True) == []
    assert jobs_trigger_problems(scaled(own, jobs), "rag", True, True) == []
    assert jobs_trigger_problems(scaled(jobs), "rag", False, True)
    assert jobs_trigger_problems(scaled(other), "rag", False, True)
    assert jobs_trigger_problems(scaled(), "rag", False, True)
    assert jobs_trigger_problems(scaled(own, own), "rag", True, True)


def test_component_manifests_are_rendered_from_components_yaml() -> None:
    """deploy/k8s/base/components/ is what `make deploy` writes from deploy/components.yaml
    (nothing edited by hand, nothing missing, nothing left over)."""
    assert render.stale() == []


def test_a_two_line_entry_renders_a_deployable_component() -> None:
    """`rag: {extras: rag, memory: [...]}` for a component with jobs gives a Deployment, a PDB
    and a ScaledObject that pass the checks above, scaling on rag-jobs."""
    spec = render.Spec.read("rag", {"extras": "rag", "memory": ["256Mi", "512Mi"]})
    objects = [o for o in yaml.safe_load_all(render.render(spec, jobs=True, events=False)) if o]
    by_kind = {o["kind"]: o for o in objects}
    assert set(by_kind) == {"Deployment", "PodDisruptionBudget", "ScaledObject"}
    deployment = by_kind["Deployment"]
    assert component_label(deployment) == "rag"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["args"]) == ("aifleet-rag", ["worker", "rag"])
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "aifleet",
        "app.kubernetes.io/component": "rag",
    }
    assert jobs_trigger_problems(by_kind["ScaledObject"], "rag", True) == []
    assert jobs_trigger_problems(by_kind["ScaledObject"], "rag", False)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({}, "needs at least"),
        ({"extras": "rag", "replicas": 3}, "unknown keys"),
        ({"extras": "rag", "secrets": ["shared-keys"]}, "named aifleet-rag-"),
        ({"extras": "rag", "config_maps": {"models": "/etc/x"}}, "named aifleet-rag-"),
    ],
)
def test_a_wrong_entry_is_refused_naming_the_component(entry: Doc, message: str) -> None:
    """An entry without extras, with an unknown key or with a shared object's name fails."""
    with pytest.raises(ValueError, match=message):
        render.Spec.read("rag", entry)


def test_a_component_without_an_entry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A component found under workers/ but missing from components.yaml stops the rendering
    with its name; an entry for no component too."""
    entries = render.specs()
    monkeypatch.setattr(render, "specs", lambda: {k: v for k, v in entries.items() if k != "cache"})
    with pytest.raises(ValueError, match="no entry for cache"):
        render.rendered()
    extra = render.Spec.read("nothing", {"extras": ""})
    monkeypatch.setattr(render, "specs", lambda: {**entries, "nothing": extra})
    with pytest.raises(ValueError, match="nothing is no component"):
        render.rendered()


def test_images_are_built_with_the_same_extras_everywhere() -> None:
    """compose builds each component's image with the EXTRAS deploy/components.yaml names."""
    services = compose_services()
    for name, spec in render.specs().items():
        assert services[name]["build"]["args"]["EXTRAS"] == spec.extras, name


def test_keda_trigger_metadata_values_are_strings() -> None:
    """KEDA's CRD types trigger metadata as a map of strings; a bare number is rejected."""
    for scaled_object in k8s_objects("ScaledObject").values():
        for trigger in scaled_object["spec"]["triggers"]:
            for key, value in trigger["metadata"].items():
                assert isinstance(value, str), f"{trigger['type']}.{key} is not a string"


def test_stop_timeouts_outlast_the_default_drain_timeout() -> None:
    """systemd, compose and Kubernetes each wait longer than the runtime drains before SIGKILL."""
    drain = default_drain_timeout()
    stop = values(systemd_entries(UNIT)["Service"], "TimeoutStopSec")
    waits = {"systemd TimeoutStopSec": seconds(stop[-1])}
    services = compose_services()
    for name in available():
        waits[f"compose {name} stop_grace_period"] = seconds(services[name]["stop_grace_period"])
    for name, deployment in k8s_objects("Deployment").items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        waits[f"k8s {name} terminationGracePeriodSeconds"] = seconds(grace)
    short = {where: wait for where, wait in waits.items() if wait <= drain}
    assert short == {}, f"must exceed the {drain} s drain timeout"


def test_configured_drain_timeout_matches_the_runtime_default() -> None:
    """The drain timeout the k8s ConfigMap sets is the default the grace periods were sized for."""
    config = k8s_objects("ConfigMap")["aifleet-config"]["data"]
    assert seconds(config["AIFLEET_DRAIN_TIMEOUT"]) == default_drain_timeout()


def test_gateway_mounts_a_valid_model_list_where_its_config_points() -> None:
    """compose and Kubernetes both put deploy/gateway/models.example.yaml at the path their
    AIFLEET_GATEWAY_CONFIG names, and the gateway's loader accepts that file."""
    example = DEPLOY / "gateway" / "models.example.yaml"
    config = load_config(GatewaySettings(config=example))
    assert config.default_model != OFFLINE_ALIAS, "the example should route to a real provider"

    service = compose_services()["gateway"]
    path = service["environment"]["AIFLEET_GATEWAY_CONFIG"]
    (mount,) = [v for v in service["volumes"] if v["target"] == path]
    default = re.fullmatch(r"\$\{AIFLEET_GATEWAY_MODELS:-(.+)\}", mount["source"])
    assert default is not None, mount["source"]
    assert (COMPOSE.parent / default.group(1)).resolve() == example

    pod = k8s_objects("Deployment")["aifleet-gateway"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    path = Path(env["AIFLEET_GATEWAY_CONFIG"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    generators = yaml_docs(example.parent / "kustomization.yaml")[0]["configMapGenerator"]
    (generator,) = [g for g in generators if g["name"] == volume["configMap"]["name"]]
    assert f"{path.name}={example.name}" in generator["files"]


def test_systemd_unit_runs_the_worker_command_for_its_instance() -> None:
    """The template unit starts `aifleet worker %i` from /opt/aifleet/.venv and stops on SIGTERM."""
    unit = systemd_entries(UNIT)
    service = unit["Service"]
    (exec_start,) = values(service, "ExecStart")
    assert exec_start.split() == ["/opt/aifleet/.venv/bin/aifleet", "worker", "%i"]
    assert values(service, "EnvironmentFile") == [
        "/etc/aifleet/common.env",
        "-/etc/aifleet/%i.env",
    ]
    assert values(service, "KillSignal") == ["SIGTERM"]
    assert values(service, "Restart") == ["on-failure"]
    assert values(service, "NoNewPrivileges") == ["yes"]
    assert values(service, "ProtectSystem") == ["strict"]
    assert values(unit["Unit"], "PartOf") == ["aifleet.target"]
    assert values(unit["Install"], "WantedBy") == ["aifleet.target"]
    assert values(systemd_entries(TARGET)["Install"], "WantedBy") == ["multi-user.target"]


def test_streams_are_provisioned_by_a_one_shot_in_compose_and_kubernetes() -> None:
    """compose's `streams` service and the k8s Job both run `aifleet streams` once."""
    service = compose_services()["streams"]
    assert service["command"] == ["streams"]
    assert service["restart"] == "no"
    (job,) = k8s_objects("Job").values()
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"OnFailure", "Never"}
    (container,) = pod["containers"]
    assert container["args"] == ["streams"]


def test_dockerfile_installs_the_package_as_a_non_root_worker() -> None:
    """The image copies every package the distribution includes, defaults to a real extra, runs
    `aifleet worker <component>` as a numeric non-root user and stops on SIGTERM."""
    instructions = dockerfile_instructions()
    copied: set[str] = set()
    for word, args in instructions:
        if word == "COPY" and "--from=" not in args:
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            copied.update(s.rstrip("/") for s in sources)
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in include}
    missing = packages - copied
    assert missing == set(), f"the Dockerfile does not copy {missing}"
    assert {"pyproject.toml", "README.md"} <= copied

    build_args = {}
    for word, args in instructions:
        if word == "ARG":
            key, _, default = args.partition("=")
            build_args[key] = default
    extras = set(pyproject()["project"]["optional-dependencies"])
    assert set(filter(None, build_args["EXTRAS"].split(","))) <= extras
    last = dict(instructions)
    assert last["ENTRYPOINT"] == '["aifleet"]'
    command = yaml.safe_load(last["CMD"])
    assert command[0] == "worker"
    assert set(command[1:]) <= set(available())
    assert last["STOPSIGNAL"] == "SIGTERM"
    user = last["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0


def test_dockerignore_lets_through_what_the_dockerfile_copies() -> None:
    """Every path the Dockerfile copies from the build context survives .dockerignore."""
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, args in dockerfile_instructions():
        if word != "COPY" or "--from=" in args:
            continue
        for source in [a for a in args.split() if not a.startswith("--")][:-1]:
            excluded = False
            for pattern in patterns:
                negated = pattern.startswith("!")
                if fnmatch.fnmatchcase(source.rstrip("/"), pattern.lstrip("!").rstrip("/")):
                    excluded = not negated
            assert not excluded, f".dockerignore excludes {source}, which the Dockerfile copies"
