"""The lab's Kubernetes deployment as it would run: the overlay rendered with `kubectl
kustomize` and a token file written as the operator would, then `compactsim-server` started
with the container's environment and arguments (the rendered ConfigMap and env, the image's
ENTRYPOINT, the generated Secret's file where the pod mounts it) and probed the way the
kubelet would. Also the pod's memory against the runs it admits, the prometheus-operator
resources against deploy/prometheus/prometheus.yml, and the probes with TLS on.

Skipped without `kubectl` (for `kubectl kustomize`)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from compactsim.client.channel import open_channel
from compactsim.proto.v1 import simulator_pb2, simulator_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROM = ROOT / "deploy" / "prometheus" / "prometheus.yml"
BIN = Path(sys.executable).parent
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed: cannot "
                                                        "render kustomize")
TOKEN = "3f6c2a9d0e1b4c7a8f5e6d2c1b0a9f8e"
SCRAPE_TOKEN = "9b1e7d3c5a2f4e6d8c0b1a3f5e7d9c2b"     # the operator's scrape-token file
SERVER_BASELINE = 512 << 20   # what the server itself needs besides its workers


def render(tmp: Path, *components: str, tokens: str | None = f"{TOKEN} alice\n") -> list[dict]:
    """The lab overlay of a copy of deploy/k8s, with `tokens` written where the operator
    writes them and `components` added to the overlay."""
    copy = tmp / "k8s"
    if not copy.exists():
        shutil.copytree(K8S, copy)
    lab = copy / "overlays" / "lab"
    if tokens is not None:
        (lab / "tokens").write_text(tokens)
    (copy / "components" / "prometheus-operator" / "scrape-token").write_text(SCRAPE_TOKEN)
    if components:
        k = yaml.safe_load((lab / "kustomization.yaml").read_text())
        k["components"] = [f"../../components/{c}" for c in components]
        (lab / "kustomization.yaml").write_text(yaml.safe_dump(k))
    p = subprocess.run([KUBECTL, "kustomize", str(lab)], capture_output=True, text=True,
                       timeout=120, check=False)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return [d for d in yaml.safe_load_all(p.stdout) if d]


def one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: list[dict]) -> dict:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form) from deploy/Dockerfile."""
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    (m,) = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
    return yaml.safe_load(m)


def size(q: str) -> int:
    """A Kubernetes memory quantity or a compactsim size (Mi / MiB...) in bytes."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?B?", q)
    assert m, q
    return int(m.group(1)) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40}[m.group(2)]


class Pod:
    """The rendered container as a local process: its environment (ConfigMap, then env),
    its command, the files it mounts under `root`; listeners moved to free loopback ports
    (the pod's own network namespace)."""

    def __init__(self, docs: list[dict], root: Path, files: dict[str, Path] | None = None):
        c = container(docs)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        cm = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ConfigMap"}
        env: dict[str, str] = {}
        for src in c.get("envFrom", []):
            env.update(cm[src["configMapRef"]["name"]]["data"])
        env.update({e["name"]: e["value"] for e in c.get("env", [])})
        # mounted volumes -> local directories
        secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.mounts: dict[str, Path] = {}
        for m in c["volumeMounts"]:
            local = root / m["name"]
            local.mkdir(parents=True, exist_ok=True)
            vol = volumes[m["name"]]
            name = vol.get("secret", {}).get("secretName")
            if name in secrets:   # a Secret of the manifests: its files, mode as mounted
                for key, b64 in secrets[name].get("data", {}).items():
                    (local / key).write_bytes(base64.b64decode(b64))
                    (local / key).chmod(vol["secret"].get("defaultMode", 0o644) & 0o700)
            for key, path in (files or {}).items():   # a Secret made outside the manifests
                if m["name"] == key:
                    for f in path.iterdir():
                        shutil.copy(f, local / f.name)
            self.mounts[m["mountPath"]] = local
        self.env = {k: self.local(v) for k, v in env.items()}
        self.listen = self.env["COMPACTSIM_LISTEN"]
        self.env["COMPACTSIM_LISTEN"] = "127.0.0.1:0"
        self.env["COMPACTSIM_METRICS_LISTEN"] = "127.0.0.1:0"
        self.port_file = root / "port"
        self.env["COMPACTSIM_PORT_FILE"] = str(self.port_file)
        command = c.get("command") or entrypoint()
        self.argv = [str(BIN / command[0]), *command[1:], *c.get("args", [])]
        self.container = c
        self.root = root
        self.proc: subprocess.Popen | None = None

    def local(self, value: str) -> str:
        for mount, local in sorted(self.mounts.items(), key=lambda x: -len(x[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount):]
        return value

    def start(self) -> int:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("COMPACTSIM_")},
               **self.env}
        with open(self.root / "server.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + 30
        while not self.port_file.exists():
            assert self.proc.poll() is None, (self.root / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        self.port = int(self.port_file.read_text())
        return self.port

    def probe_env(self) -> dict[str, str]:
        """The environment an exec probe runs with: the container's, its own listen
        address (on its port here)."""
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("COMPACTSIM_")},
               **self.env}
        env["COMPACTSIM_LISTEN"] = self.listen.rsplit(":", 1)[0] + f":{self.port}"
        return env

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def test_lab_overlay_starts_the_server_with_a_generated_token_file(tmp_path):
    docs = render(tmp_path)
    secret = one(docs, "Secret")
    assert re.fullmatch(r"compactsim-tokens-[a-z0-9]{10}", secret["metadata"]["name"])
    pod = Pod(docs, tmp_path / "pod")
    token_file = Path(pod.env["COMPACTSIM_TOKEN_FILE"])
    assert token_file.read_text() == f"{TOKEN} alice\n"
    port = pod.start()
    try:
        c = pod.container
        # the kubelet's native gRPC probes: grpc.health.v1 Check on the container port
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == int(pod.listen.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            deadline = time.monotonic() + 10
            while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != \
                    health_pb2.HealthCheckResponse.SERVING:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            stub = simulator_pb2_grpc.SimulatorStub(ch)
            with pytest.raises(grpc.RpcError) as err:
                stub.ListRuns(simulator_pb2.ListRunsRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with open_channel(f"127.0.0.1:{port}", token=TOKEN) as ch:
            stub = simulator_pb2_grpc.SimulatorStub(ch)
            assert stub.ListRuns(simulator_pb2.ListRunsRequest(), timeout=5).total_size == 0
    finally:
        assert pod.stop() == 0, (tmp_path / "pod" / "server.log").read_text()


def test_lab_overlay_needs_the_token_file_and_ships_no_secret(tmp_path):
    """Without the operator's file the overlay does not render (rather than deploying a
    server that refuses to start), and nothing in the repository is a Secret whose
    re-apply would overwrite the tokens in force."""
    with pytest.raises(RuntimeError, match="tokens"):
        render(tmp_path, tokens=None)
    assert not [d for path in K8S.rglob("*.yaml") for d in yaml.safe_load_all(
        path.read_text()) if isinstance(d, dict) and d.get("kind") == "Secret"]
    assert "deploy/k8s/overlays/lab/tokens" in (ROOT / ".gitignore").read_text()
    # a changed file is a new Secret, and the Deployment follows it
    a = render(tmp_path / "a", tokens=f"{TOKEN} alice\n")
    b = render(tmp_path / "b", tokens=f"{TOKEN} alice\n{TOKEN[::-1]} bob\n")
    names = [one(d, "Secret")["metadata"]["name"] for d in (a, b)]
    assert names[0] != names[1]
    for docs, name in zip((a, b), names):
        vols = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        assert {"name": "tokens", "secret": {"secretName": name, "defaultMode": 0o440}} in vols


def test_pod_memory_holds_the_runs_it_admits(tmp_path):
    """--max-run-resident is what one admitted run's worker may need: the limit is
    workers x that + the server's own."""
    docs = render(tmp_path)
    env = one(docs, "ConfigMap")["data"]
    workers = int(env["COMPACTSIM_WORKERS"])
    resident = size(env["COMPACTSIM_MAX_RUN_RESIDENT"])
    limit = size(container(docs)["resources"]["limits"]["memory"])
    request = size(container(docs)["resources"]["requests"]["memory"])
    assert limit >= workers * resident + SERVER_BASELINE, (workers, resident, limit)
    assert request <= limit


def test_prometheus_operator_resources_match_the_plain_config(tmp_path):
    docs = render(tmp_path, "prometheus-operator")
    prom = {j["job_name"]: j for j in yaml.safe_load(PROM.read_text())["scrape_configs"]}
    svc = one(docs, "Service")
    ns = svc["metadata"]["namespace"]
    sm = one(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert ep["path"] == prom["compactsim"]["metrics_path"]
    sc = one(docs, "ScrapeConfig")
    assert sc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    runs = prom["compactsim-runs"]
    assert sc["spec"]["metricsPath"] == runs["metrics_path"]
    (sd,) = sc["spec"]["httpSDConfigs"]
    metrics_port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == ep["port"])
    assert sd["url"] == f"http://{svc['metadata']['name']}.{ns}.svc:{metrics_port}/sd"
    assert [{"source_labels": r["sourceLabels"], "target_label": r["targetLabel"]}
            for r in sc["spec"]["relabelings"]] == runs["relabel_configs"]



def test_prometheus_operator_authenticates_to_the_metrics_listener(tmp_path):
    """The lab's server has a token file, so its metrics listener answers 401 to a scrape
    without a bearer token: both jobs (and the /sd discovery) send the scrape token from a
    Secret the component generates, under the name they give it; the pod carries no
    prometheus.io annotations, whose scrapes could not authenticate."""
    docs = render(tmp_path, "prometheus-operator",
                  tokens=f"{TOKEN} alice\n{SCRAPE_TOKEN} prometheus\n")
    cred = {"name": "compactsim-scrape-token", "key": "token"}
    bearer = {"type": "Bearer", "credentials": cred}
    (secret,) = [d for d in docs if d["kind"] == "Secret"
                 and d["metadata"]["name"] == cred["name"]]
    assert base64.b64decode(secret["data"][cred["key"]]).decode() == SCRAPE_TOKEN
    (ep,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert ep["authorization"] == bearer
    sc = one(docs, "ScrapeConfig")["spec"]
    assert sc["authorization"] == bearer
    assert [sd["authorization"] for sd in sc["httpSDConfigs"]] == [bearer]
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in annotations if k.startswith("prometheus.io/")]

def pki(d: Path, make_certificate) -> Path:
    """tls.crt, tls.key, ca.crt (self-signed) for the Service name `compactsim`, as
    cert-manager writes a kubernetes.io/tls Secret."""
    d.mkdir(parents=True)
    cert, _ = make_certificate("compactsim", ("compactsim",)).write(d / "tls.crt", d / "tls.key")
    (d / "ca.crt").write_bytes(cert.read_bytes())
    return d


def test_probes_work_with_tls_on(tmp_path, make_certificate):
    """With the tls component the server serves TLS, and the probes, exec'd as the kubelet
    would with the container's environment, find it SERVING (a plaintext gRPC probe, the
    kubelet's native one, cannot)."""
    docs = render(tmp_path, "tls")
    pod = Pod(docs, tmp_path / "pod", files={"tls": pki(tmp_path / "secret-tls", make_certificate)})
    port = pod.start()
    try:
        c = pod.container
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert set(c[probe]) & {"grpc", "exec", "httpGet", "tcpSocket"} == {"exec"}
            cmd = c[probe]["exec"]["command"]
            deadline = time.monotonic() + 15
            while True:
                p = subprocess.run([str(BIN / cmd[0]), *cmd[1:]], env=pod.probe_env(),
                                   capture_output=True, text=True, timeout=30, check=False)
                if p.returncode == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert p.returncode == 0, (probe, p.stdout, p.stderr)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            with pytest.raises(grpc.RpcError):
                health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(),
                                                     timeout=3)
    finally:
        assert pod.stop() == 0, (tmp_path / "pod" / "server.log").read_text()


def test_prometheus_operator_scrapes_over_tls_with_the_tls_component(tmp_path):
    """The listeners speak TLS with the tls component: the ServiceMonitor and ScrapeConfig
    then use HTTPS with the same CA and the name the certificate carries."""
    docs = render(tmp_path, "prometheus-operator", "tls")
    tls_volume = next(v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
                      if v["name"] == "tls")
    ca = {"secret": {"name": tls_volume["secret"]["secretName"], "key": "ca.crt"}}
    probe = container(docs)["readinessProbe"]["exec"]["command"]
    name = probe[probe.index("--server-name") + 1]
    (ep,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["tlsConfig"] == {"ca": ca, "serverName": name}
    sc = one(docs, "ScrapeConfig")["spec"]
    assert sc["scheme"] == "HTTPS" and sc["tlsConfig"] == {"ca": ca, "serverName": name}
    (sd,) = sc["httpSDConfigs"]
    assert sd["url"].startswith("https://") and sd["tlsConfig"] == sc["tlsConfig"]
    # without the operator's resources the tls component still renders
    assert one(render(tmp_path / "alone", "tls"), "Deployment")
