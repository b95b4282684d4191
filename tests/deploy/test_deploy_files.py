"""The deployment files cannot run here (no Docker engine, no cluster): they parse, hold the expected
kinds, and name only what the code really has (topics, commands, ports, metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from haochaping.settings import KafkaSettings
from haochaping.topics import TOPICS, check_topic_partitions

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_documents() if d["kind"] == kind}


@pytest.mark.parametrize(
    "path", sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml", ".json"))
)
def test_every_file_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        json.loads(text)
    else:
        assert list(yaml.safe_load_all(text))


def test_compose_runs_the_official_images_and_every_part() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    commands = {name: s.get("command", [None])[0] for name, s in services.items()}
    for part in ("topics", "migrate", "ingest", "worker", "sink", "api", "simulate"):
        assert part in commands.values(), part
    # Every project service is built from this repository's Dockerfile.
    for name, service in services.items():
        if service.get("command"):
            assert service["build"]["dockerfile"] == "deploy/Dockerfile", name


def test_the_commands_the_deployments_run_exist() -> None:
    from haochaping.cli import app

    registered = {c.name or c.callback.__name__ for c in app.registered_commands if c.callback}
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text(encoding="utf-8"))
    wanted = {s["command"][0] for s in compose["services"].values() if s.get("command")}
    for workload in [
        *by_kind("Deployment").values(),
        *by_kind("StatefulSet").values(),
        *by_kind("Job").values(),
    ]:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            wanted.add(container["args"][0])
    assert wanted <= registered, f"not a haochaping command: {wanted - registered}"


def test_k8s_has_kafka_topics_clickhouse_workloads_autoscaling_and_monitoring() -> None:
    kinds = {d["kind"] for d in k8s_documents()}
    assert {
        "Kafka",
        "KafkaNodePool",
        "KafkaTopic",
        "ClickHouseInstallation",
        "ClickHouseKeeperInstallation",
        "Deployment",
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "PodMonitor",
        "Job",
    } <= kinds


def test_every_topic_has_a_kafka_topic_with_the_partitions_the_settings_give_it() -> None:
    topics = {d["spec"]["topicName"]: d["spec"] for d in by_kind("KafkaTopic").values()}
    assert {spec.name for spec in TOPICS} <= set(topics)
    config = by_kind("ConfigMap")["haochaping"]["data"]
    kafka = KafkaSettings(
        partitions=int(config["HAOCHAPING_KAFKA__PARTITIONS"]),
        topic_partitions=json.loads(config["HAOCHAPING_KAFKA__TOPIC_PARTITIONS"]),
    )
    check_topic_partitions(kafka)
    # The topics the workers read (ledger.intake and ledger.commands above all) share the common count.
    assert {spec.name: topics[spec.name]["partitions"] for spec in TOPICS} == {
        spec.name: kafka.partitions_of(spec.name) for spec in TOPICS
    }
    assert {topics[spec.name]["partitions"] for spec in TOPICS if spec.co_partitioned} == {kafka.partitions}
    assert topics["ledger.events"]["config"]["retention.ms"] == "-1"
    # No more sink replicas than partitions of the sink's topics: the rest would stay idle.
    sink_partitions = max(kafka.partitions_of(n) for n in ("reviews.accepted", "ledger.events", "alerts"))
    assert by_kind("HorizontalPodAutoscaler")["sink"]["spec"]["maxReplicas"] <= sink_partitions


def test_http_services_have_probes_and_every_autoscaler_targets_a_workload() -> None:
    for name in ("ingest", "api"):
        container = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    workloads = {("Deployment", n) for n in by_kind("Deployment")} | {
        ("StatefulSet", n) for n in by_kind("StatefulSet")
    }
    hpas = by_kind("HorizontalPodAutoscaler")
    assert set(hpas) >= {"ingest", "worker", "sink", "api"}
    for hpa in hpas.values():
        ref = hpa["spec"]["scaleTargetRef"]
        assert (ref["kind"], ref["name"]) in workloads


def test_the_dashboard_queries_only_metrics_the_code_exports() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "haochaping.json").read_text(encoding="utf-8"))
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert len(exprs) >= 8
    source = "\n".join(
        p.read_text(encoding="utf-8")
        for pkg in ("ingest", "streams", "sinks", "api")
        for p in (ROOT / pkg).rglob("*.py")
    )
    for expr in exprs:
        for metric in re.findall(r"\b((?:haochaping|hcp)_[a-z_]+?)(?:_total|_bucket|_sum|_count)?\b", expr):
            assert f'"{metric}' in source, f"{metric} (in {expr!r}) is not exported by any part"


def test_the_dockerfile_installs_the_repository_like_the_local_setup() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "FROM python:3.11" in dockerfile  # pyproject: requires-python >= 3.11, the tested version
    assert "COPY pyproject.toml" in dockerfile and "pip install --no-deps ." in dockerfile
    for package in ("haochaping", "ingest", "streams", "sinks", "api"):
        assert f"COPY {package} ./{package}" in dockerfile
    assert 'ENTRYPOINT ["tini", "--", "haochaping"]' in dockerfile
