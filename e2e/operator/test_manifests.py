"""Every generated object, every CRD file and every example, validated offline against
the real Kubernetes OpenAPI schemas (kubernetes-validate) and, for our custom
resources, against the CRDs' own openAPIV3Schema (jsonschema)."""

import copy
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from oplib import CHART, K8S_VERSIONS, ROOT, load_all, render

CRD_FILES = sorted((ROOT / "crds").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
OUR_GROUP = "storage.garage.rs"


def k8s_validate(obj: dict) -> None:
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(obj, v, strict=True)


def crd_schemas() -> dict[str, dict]:
    """kind -> openAPIV3Schema of the served version."""
    out = {}
    for f in CRD_FILES:
        (crd,) = load_all(f)
        kind = crd["spec"]["names"]["kind"]
        (version,) = crd["spec"]["versions"]
        out[kind] = version["schema"]["openAPIV3Schema"]
    return out


def strict_schema(schema: dict) -> dict:
    """JSON Schema of a structural CRD schema: unknown fields rejected (the API server
    would silently prune them, hiding typos), `metadata` left open, int-or-string kept."""
    s = copy.deepcopy(schema)

    def walk(node: dict, path: str) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        props = node.get("properties")
        if isinstance(props, dict):
            for k, v in props.items():
                if path == "" and k == "metadata":
                    continue
                walk(v, f"{path}.{k}")
            if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                node["additionalProperties"] = False
                if path == "":
                    props.setdefault("apiVersion", {"type": "string"})
                    props.setdefault("kind", {"type": "string"})
                    props.setdefault("metadata", {"type": "object"})
        if isinstance(node.get("items"), dict):
            walk(node["items"], path + "[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + "{}")

    walk(s, "")
    return s


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: p.name)
def test_crd_files_are_valid_crds(path: Path) -> None:
    (crd,) = load_all(path)
    assert crd["kind"] == "CustomResourceDefinition"
    k8s_validate(crd)
    spec = crd["spec"]
    assert spec["group"] == OUR_GROUP
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert spec["names"]["shortNames"], "short names for kubectl"
    cols = [c["name"] for c in version["additionalPrinterColumns"]]
    assert "Ready" in cols and "Age" in cols


def test_crd_short_names_match_the_contract() -> None:
    names = {}
    for f in CRD_FILES:
        (crd,) = load_all(f)
        names[crd["spec"]["names"]["kind"]] = crd["spec"]["names"]["shortNames"]
    assert names == {"GarageCluster": ["gc"], "Bucket": ["gbucket"], "AccessKey": ["gkey"]}


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in chart_crds] == [p.name for p in CRD_FILES]
    for a, b in zip(chart_crds, CRD_FILES):
        assert a.read_text() == b.read_text(), f"{a} differs from {b}: rerun crdgen"


def test_zones_are_bounded_and_keyed_by_name() -> None:
    schema = crd_schemas()["GarageCluster"]
    zones = schema["properties"]["spec"]["properties"]["zones"]
    assert zones["maxItems"] == 16 and zones["minItems"] == 1
    assert zones["x-kubernetes-list-type"] == "map"
    assert zones["x-kubernetes-list-map-keys"] == ["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    schemas = crd_schemas()
    docs = load_all(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        group = doc["apiVersion"].split("/")[0]
        if group == OUR_GROUP:
            jsonschema.validate(doc, strict_schema(schemas[doc["kind"]]))
        else:
            k8s_validate(doc)


def test_a_typo_in_a_custom_resource_is_caught() -> None:
    """The CR check is not vacuous: a misspelt field and a bad value both fail."""
    schema = strict_schema(crd_schemas()["GarageCluster"])
    (doc,) = load_all(ROOT / "examples" / "garagecluster.yaml")
    typo = copy.deepcopy(doc)
    typo["spec"]["zones"][0]["replica"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(typo, schema)
    bad = copy.deepcopy(doc)
    bad["spec"]["consistencyMode"] = "eventual"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_example_pod_consumes_the_bucket_secret() -> None:
    (bucket,) = load_all(ROOT / "examples" / "bucket.yaml")
    (pod,) = load_all(ROOT / "examples" / "pod-aws-cli.yaml")
    secret = f"{bucket['metadata']['name']}-bucket"
    refs = [e["secretRef"]["name"] for c in pod["spec"]["containers"] for e in c.get("envFrom", [])]
    assert refs == [secret]


@pytest.fixture(scope="module")
def objects(operator_bin) -> list[dict]:
    """What `operator render` prints for the 3-zone example: what the reconciler applies."""
    return render(operator_bin, ROOT / "examples" / "garagecluster.yaml")


class TestRenderedObjects:
    """`operator render` prints what the reconciler applies for the 3-zone example."""

    def test_every_object_is_valid_kubernetes(self, objects) -> None:
        for obj in objects:
            k8s_validate(obj)

    def test_the_kubernetes_check_is_not_vacuous(self, objects) -> None:
        sts = copy.deepcopy(next(o for o in objects if o["kind"] == "StatefulSet"))
        sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_validate(sts)

    def test_the_3_zone_example_creates_these_objects(self, objects) -> None:
        got = sorted((o["kind"], o["metadata"]["name"]) for o in objects)
        assert got == sorted([
            ("ConfigMap", "garage-config"),
            ("Service", "garage-peers"),
            ("Service", "garage-s3"),
            ("PodDisruptionBudget", "garage"),
            ("StatefulSet", "garage-paris"),
            ("StatefulSet", "garage-lyon"),
            ("StatefulSet", "garage-berlin"),
            ("Secret", "garage-rpc-secret"),
            ("Secret", "garage-admin-token"),
        ])
        for o in objects:
            assert o["metadata"]["namespace"] == "storage"
            (owner,) = o["metadata"]["ownerReferences"]
            assert (owner["kind"], owner["name"], owner["controller"]) == ("GarageCluster", "garage", True)

    def test_statefulsets_pin_zones_and_mount_volumes(self, objects) -> None:
        for sts in (o for o in objects if o["kind"] == "StatefulSet"):
            zone = sts["metadata"]["labels"]["storage.garage.rs/zone"]
            pod = sts["spec"]["template"]["spec"]
            (term,) = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            assert term["matchExpressions"] == [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [zone]}
            ]
            assert sts["spec"]["podManagementPolicy"] == "Parallel"
            assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["data", "metadata"]
            (c,) = pod["containers"]
            env = {e["name"]: e.get("value") for e in c["env"]}
            assert env["STORAGED_ZONE"] == zone
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert c["livenessProbe"]["httpGet"]["path"] == "/health"
            assert pod["securityContext"]["runAsNonRoot"] is True

    def test_config_has_design_keys_and_no_secret_values(self, objects) -> None:
        (cm,) = [o for o in objects if o["kind"] == "ConfigMap"]
        toml = cm["data"]["storaged.toml"]
        for key in ["metadata_dir", "data_dir", "replication_factor", "consistency_mode",
                    "rpc_bind_addr", "rpc_secret_file", "bootstrap_peers", "[s3_api]",
                    "api_bind_addr", "s3_region", "root_domain", "[admin]", "admin_token_file"]:
            assert key in toml, key
        assert "garage-peers.storage.svc.cluster.local:3901" in toml
        assert "rpc_secret =" not in toml and "admin_token =" not in toml

    def test_headless_service_and_single_pdb(self, objects) -> None:
        (peers,) = [o for o in objects if o["metadata"]["name"] == "garage-peers"]
        assert peers["spec"]["clusterIP"] == "None"
        assert peers["spec"]["publishNotReadyAddresses"] is True
        (pdb,) = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
        assert pdb["spec"]["maxUnavailable"] == 1
