"""The Kubernetes deployment (backtest_assets/deploy/kubernetes), checked offline: every
manifest against Kubernetes' schemas (strict: no unknown field), the instance against
Dagster's schema and the run launcher's own, and the environment, commands and addresses
against what the code reads and serves. No cluster here: what the pods then do is what the
Postgres, lake and Celery tests run on this machine."""

import importlib
import re
import shutil
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from backtest_assets.deploy.celery import BROKER_ENV, EXECUTOR_ENV
from backtest_assets.deploy.settings import PG_URL_ENV, RUN_CREATION_ENV
from backtest_assets.resources.warehouse import DATA_ROOT_ENV, LAKE_CATALOG_ENV, LAKE_DATA_ENV
from backtest_assets.warehouse import BACKEND_ENV
from tests.conftest import REPO

K8S = REPO / "backtest_assets" / "deploy" / "kubernetes"
K8S_VERSION = "1.33.0"  # a version current clusters run; the schemas ship with the package


def manifests() -> dict[str, list[dict]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return {f: [d for d in yaml.safe_load_all((K8S / f).read_text()) if d]
            for f in kust["resources"]}


def resources(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for docs in manifests().values() for d in docs
            if d["kind"] == kind}


def test_the_kustomization_lists_every_manifest_and_each_is_valid_kubernetes():
    listed = set(manifests())
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk
    kinds = set()
    for name, docs in manifests().items():
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message}")
            assert doc["metadata"].get("namespace", "backtest") == "backtest"
            kinds.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount", "Role",
            "RoleBinding", "PersistentVolumeClaim"} <= kinds
    # a deliberately broken manifest is refused: the check can fail
    bad = {**resources("Service")["redis"], "spec": {"ports": [{"port": "six"}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _instance(tmp_path: Path) -> dict:
    text = resources("ConfigMap")["dagster-instance"]["data"]["dagster.yaml"]
    (tmp_path / "dagster.yaml").write_text(text)
    return yaml.safe_load(text)


def test_the_instance_passes_dagsters_schema_and_the_run_launchers(tmp_path, monkeypatch):
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_k8s import K8sRunLauncher

    monkeypatch.setenv(PG_URL_ENV, "postgresql+psycopg2://u@h/d")
    config = _instance(tmp_path)
    loaded, _ = dagster_instance_config(str(tmp_path))  # raises on a schema error
    for part in ("run_storage", "event_log_storage", "schedule_storage"):
        assert loaded[part]["config"]["postgres_url"] == {"env": PG_URL_ENV}
        storage = loaded[part]
        assert hasattr(importlib.import_module(storage["module"]), storage["class"])
    launcher = config["run_launcher"]
    assert getattr(importlib.import_module(launcher["module"]), launcher["class"]) \
        is K8sRunLauncher
    result = validate_config(K8sRunLauncher.config_type(), launcher["config"])
    assert result.success, [e.message for e in result.errors]
    coordinator = config["run_coordinator"]
    assert hasattr(importlib.import_module(coordinator["module"]), coordinator["class"])
    # the launcher's Jobs read the instance and the environment every other pod reads
    assert launcher["config"]["instance_config_map"] in resources("ConfigMap")
    assert set(launcher["config"]["env_config_maps"]) <= set(resources("ConfigMap"))
    assert set(launcher["config"]["env_secrets"]) <= set(resources("Secret"))
    assert launcher["config"]["service_account_name"] in resources("ServiceAccount")
    # the pools rise above the DuckDB file's single writer only because the warehouse is a lake
    assert config["concurrency"]["pools"]["default_limit"] > 1
    # a broken launcher config is refused: the check can fail
    assert not validate_config(K8sRunLauncher.config_type(),
                               {**launcher["config"], "job_namespace": 7}).success


def _env() -> dict[str, str]:
    return {**resources("ConfigMap")["backtest-env"]["data"],
            **resources("Secret")["backtest-secrets"]["stringData"]}


def test_the_environment_selects_the_lake_in_object_storage_and_the_celery_executor(
        monkeypatch):
    env = _env()
    for key, value in RUN_CREATION_ENV.items():
        assert env[key] == value
    for key in (BACKEND_ENV, LAKE_DATA_ENV, DATA_ROOT_ENV, EXECUTOR_ENV, BROKER_ENV,
                PG_URL_ENV, LAKE_CATALOG_ENV, "DAGSTER_HOME", "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        assert env.get(key), key
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from backtest_assets.defs.jobs import executor_from_env
    from backtest_assets.resources.warehouse import make_warehouse
    from backtest_assets.warehouse import LakeWarehouse

    wh = make_warehouse()
    assert isinstance(wh, LakeWarehouse) and wh.remote
    assert wh.data_url == "s3://backtest-lake/lake/"
    assert executor_from_env().name == "celery"
    # the broker the executor sends to is the one the workers read, and Redis serves it
    conf = resources("ConfigMap")["celery-config"]["data"]["dagster_celery_config.py"]
    assert f'broker_url = "{env[BROKER_ENV]}"' in conf
    host, port = re.match(r"redis://([^:/]+):(\d+)/", env[BROKER_ENV]).groups()
    assert int(port) in [p["port"] for p in resources("Service")[host]["spec"]["ports"]]


def _containers() -> dict[str, dict]:
    return {name: d["spec"]["template"]["spec"]["containers"][0]
            for name, d in resources("Deployment").items()}


def test_every_command_exists_here_and_the_addresses_agree():
    bins = Path(sys.executable).parent  # the environment the image installs
    for name, container in _containers().items():
        if name != "redis":  # the broker is Redis's own image
            program = container["command"][0]
            assert (bins / program).is_file() or shutil.which(program), f"{name}: {program}"
    code = _containers()["code-location"]["command"]
    module = code[code.index("-m") + 1]
    assert importlib.import_module(module).defs is not None
    importlib.import_module("dagster_celery.app")
    workspace = yaml.safe_load(
        resources("ConfigMap")["dagster-workspace"]["data"]["workspace.yaml"])
    grpc = workspace["load_from"][0]["grpc_server"]
    assert grpc["port"] == int(code[code.index("-p") + 1])
    assert grpc["port"] in [p["port"] for p in resources("Service")[grpc["host"]]["spec"]["ports"]]
    worker = _containers()["celery-workers"]
    assert worker["command"][worker["command"].index("-Q") + 1] == "dagster"
    assert "--concurrency" in worker["command"]
    for name, container in _containers().items():
        if name != "redis":
            refs = {r.get("configMapRef", r.get("secretRef", {})).get("name")
                    for r in container["envFrom"]}
            assert refs == {"backtest-env", "backtest-secrets"}, name


def test_the_image_builds_from_files_that_exist():
    docker = (K8S / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (.+) \S+$", docker, re.M):
        for path in src.split():
            assert (REPO / path).exists(), path
    uv = re.search(r"uv==([\d.]+)", docker).group(1)
    assert f"UV_VERSION := {uv}" in (REPO / "Makefile").read_text()
    assert "uv sync --frozen --no-dev" in docker and "dagster-k8s" in docker
