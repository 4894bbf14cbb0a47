"""deploy/k3s/: the example DaemonSet passes Kubernetes' own schemas offline (kubernetes-validate --strict),
a broken copy does not, and its probes, port, user and node selector are the image's."""

import os
import subprocess

import pytest
import yaml

from packager.oci import base
from packager.oci.image import METRICS, OCI_ARCH, PORT, PROBES
from tests.conftest import ROOT

DAEMONSET = ROOT / "deploy" / "k3s" / "edge-run-daemonset.yaml"
# The oldest and newest Kubernetes this example is checked against (k3s follows Kubernetes' releases).
VERSIONS = ("1.30.0", "1.37.0")


@pytest.fixture(scope="module")
def validate():
    tool = os.environ.get("EDGEPACK_KUBERNETES_VALIDATE", str(ROOT / ".venv-k8s" / "bin" / "kubernetes-validate"))
    if not os.access(tool, os.X_OK):
        pytest.fail(f"kubernetes-validate not found at {tool}: `make .venv-k8s/.installed` installs it "
                    "(make test does)")
    return lambda path, version: subprocess.run([tool, "--strict", "-k", version, str(path)],
                                                capture_output=True, text=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_daemonset_passes_the_schemas(validate, version):
    proc = validate(DAEMONSET, version)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"passed for resource daemonset/edge-run-digits-rpi4 against version {version.rsplit('.', 1)[0]}" in (
        proc.stdout + proc.stderr)


def test_a_misspelt_probe_fails(validate, tmp_path):
    # What a plain `kubectl apply` of old would have dropped without a word: the liveness probe.
    broken = tmp_path / "broken.yaml"
    broken.write_text(DAEMONSET.read_text().replace("livenessProbe:", "livenesProbe:"))
    proc = validate(broken, VERSIONS[-1])
    assert proc.returncode != 0
    assert "'livenesProbe' was unexpected" in proc.stdout + proc.stderr


def test_daemonset_matches_the_image():
    ds = yaml.safe_load(DAEMONSET.read_text())
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["nodeSelector"]["kubernetes.io/arch"] == OCI_ARCH["aarch64"]
    assert pod["securityContext"]["runAsUser"] == base.USER_ID and pod["securityContext"]["runAsNonRoot"]
    assert container["ports"] == [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": PROBES["liveness"], "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": PROBES["liveness"], "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": PROBES["readiness"], "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(PORT),
                           "prometheus.io/path": METRICS}
