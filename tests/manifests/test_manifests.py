"""The CRD and the deploy manifests, checked the way a cluster would check them.

Every built-in object is validated against the Kubernetes 1.31 OpenAPI schemas
(kubernetes-validate, strict). VirtualPods go through what the API server does with
the CRD: pruning, OpenAPI validation and the CEL rules on a real CEL interpreter.
The CRD and `virtualpod.core.spec` must agree: the examples pass both, and every bad
object is rejected by both.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.manifests.k8s_schema import (
    CelValidator,
    admit,
    call_form_errors,
    iter_rules,
    openapi_errors,
    prune,
    quantity_calls_on_fields,
)
from virtualpod import cli
from virtualpod.core.quantity import QUANTITY_PATTERN
from virtualpod.core.settings import DEFAULTS_YAML, Settings, settings_from_mapping
from virtualpod.core.spec import SpecError, parse_virtualpod

KUBERNETES_VERSION = "1.31"
ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "virtualpod.dev_virtualpods.yaml"
MANIFESTS = ROOT / "manifests"
EXAMPLES = sorted((MANIFESTS / "examples").glob("*.yaml"))
OPERATOR_NAMESPACE = "virtualpod-system"
SETTINGS_PATH = "/etc/virtualpod/settings.yaml"
LIBVIRT_SOCKET = "/var/run/libvirt/libvirt-sock"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def deploy_files() -> list[Path]:
    """Every file `kubectl apply -k manifests/` ships, plus the examples."""
    return [CRD_FILE, *sorted(MANIFESTS.glob("*.yaml")), *EXAMPLES]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    for path in deploy_files():
        for doc in documents(path):
            if doc.get("kind") == kind and name in (None, doc["metadata"]["name"]):
                return doc
    raise AssertionError(f"no {kind} {name or ''} in the manifests")


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    (doc,) = documents(CRD_FILE)
    return doc


@pytest.fixture(scope="module")
def schema(crd: dict[str, Any]) -> dict[str, Any]:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def cel(schema: dict[str, Any]) -> CelValidator | None:
    """The CEL rules' evaluator; None without cel-python (then only CEL checks skip)."""
    try:
        import celpy  # noqa: F401
    except ImportError:
        return None
    return CelValidator(schema)


def require(cel: CelValidator | None) -> CelValidator:
    if cel is None:
        pytest.skip("cel-python is not installed: the CEL rules cannot be evaluated")
    return cel


# --- every manifest is a valid Kubernetes object -------------------------------------


def built_in_objects() -> Iterator[Any]:
    for path in deploy_files():
        for index, doc in enumerate(documents(path)):
            if doc["kind"] not in ("VirtualPod", "Kustomization"):
                yield pytest.param(doc, id=f"{path.relative_to(ROOT)}#{index}")


@pytest.mark.parametrize("obj", built_in_objects())
def test_manifest_is_valid_for_kubernetes_1_31(obj: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_kustomization_applies_every_manifest_but_the_examples() -> None:
    (kustomization,) = documents(MANIFESTS / "kustomization.yaml")
    listed = set(kustomization["resources"])
    shipped = {path.name for path in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == shipped | {"../crds"}
    (crds,) = documents(ROOT / "crds" / "kustomization.yaml")
    assert crds["resources"] == [CRD_FILE.name]


# --- the CRD --------------------------------------------------------------------------


def test_crd_names_scope_and_version(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "virtualpods.virtualpod.dev"
    assert spec["group"] == "virtualpod.dev"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "VirtualPod",
        "listKind": "VirtualPodList",
        "plural": "virtualpods",
        "singular": "virtualpod",
        "shortNames": ["vpod"],
        "categories": ["all"],
    }
    (version,) = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    for part in json_path.strip(".").split("."):
        node = (node or {}).get("properties", {}).get(part)
    return node


def test_printer_columns_point_at_declared_fields(crd: dict[str, Any]) -> None:
    (version,) = crd["spec"]["versions"]
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert list(columns) == ["QoS", "Phase", "Reason", "vCPUs", "Memory", "Host", "IP", "Age"]
    assert columns["IP"]["priority"] == 1  # kubectl get -o wide
    schema = version["schema"]["openAPIV3Schema"]
    for name, column in columns.items():
        if name != "Age":
            assert schema_at(schema, column["jsonPath"]) is not None, column
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"


def walk_schema(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", node
    for key, child in node.get("properties", {}).items():
        yield from walk_schema(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk_schema(node["items"], f"{path}[]")


def test_schema_is_structural_and_prunes_everything_but_kopf_bookkeeping(
    schema: dict[str, Any],
) -> None:
    preserved = [
        path
        for path, node in walk_schema(schema)
        if node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert preserved == [".status.kopf"]
    for path, node in walk_schema(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path


def test_cel_rules_stay_within_the_cost_budget(schema: dict[str, Any]) -> None:
    """What the API server's cost estimator needs to accept the rules: bounded lists and
    strings under every rule, and no string() conversion (its result size is unbounded)."""
    for path, node in walk_schema(schema):
        if not path.startswith(".spec"):
            continue
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path
    for rule in iter_rules(schema):
        assert not re.search(r"\bstring\(", rule.rule), rule


# Measured on kube-apiserver v1.32.13 (docs/kubernetes-versions.md): before 1.33 the cost
# estimator ignores `maxLength` on int-or-string fields, so each quantity() on one is
# costed as if megabytes long. A rule with two such calls under a 16-item list exceeded
# the per-rule budget by 1.006694x; under 15 items it fits.
PER_RULE_BUDGET = 10_000_000
CRD_BUDGET = 100_000_000
COST_PER_QUANTITY_CALL = 1.006694 * PER_RULE_BUDGET / (2 * 16)
CONTAINER_LISTS_MAX_ITEMS = 15


def estimated_cost_1_32(rule_text: str, cardinality: int) -> float:
    """The measured v1.32 cost of a rule, as its quantity() calls on fields dominate it."""
    return quantity_calls_on_fields(rule_text) * cardinality * COST_PER_QUANTITY_CALL


@pytest.mark.parametrize(
    ("rule_text", "cardinality", "fits"),
    [
        ("quantity(self.a).compareTo(quantity(self.b)) <= 0", 16, False),
        ("quantity(self.a).compareTo(quantity(self.b)) <= 0", 15, True),
        ("quantity(self.a).isLessThan(quantity('1')) ", 31, True),
        ("type(self) == string || self >= 0", 10**6, True),
        ("x ? quantity(self.a).sign() : quantity(self.a).compareTo(quantity(self.b))", 16, False),
        ("x ? quantity(self.a).sign() : quantity(self.a).compareTo(quantity(self.b))", 15, True),
    ],
    ids=[
        "two calls x 16 items: refused",
        "two calls x 15",
        "one call x 31",
        "no quantity()",
        "worse branch x 16: refused",
        "worse branch x 15",
    ],
)
def test_the_budget_estimate_reproduces_what_v1_32_measured(
    rule_text: str, cardinality: int, fits: bool, cel: CelValidator | None
) -> None:
    require(cel)
    assert (estimated_cost_1_32(rule_text, cardinality) <= PER_RULE_BUDGET) is fits


def test_rules_fit_the_cost_budget_of_kubernetes_1_31_and_1_32(
    schema: dict[str, Any], cel: CelValidator | None
) -> None:
    require(cel)
    total = 0.0
    for rule in iter_rules(schema):
        cost = estimated_cost_1_32(rule.rule, rule.cardinality)
        assert cost <= PER_RULE_BUDGET, (rule.schema_path, rule.cardinality, rule.rule)
        total += cost
    assert total <= CRD_BUDGET
    for path in (".spec.containers", ".spec.initContainers"):
        node = schema_at(schema, path)
        assert node is not None
        assert node["maxItems"] == CONTAINER_LISTS_MAX_ITEMS, path


@pytest.mark.parametrize(
    ("rule_text", "wrong"),
    [
        ("sign(quantity(self.a).sub(self.b)) >= 0", []),
        ("quantity(self.a).sub(self.b).sign() >= 0", ["sign"]),
        ("isQuantity(self) && quantity(self).isLessThan(quantity('1'))", []),
        ("self.isQuantity()", ["isQuantity"]),
        ("compareTo(quantity(self.a), quantity(self.b)) <= 0", ["compareTo"]),
    ],
)
def test_call_form_check_tells_functions_from_members(rule_text: str, wrong: list[str]) -> None:
    assert [error.split("(")[0] for error in call_form_errors(rule_text)] == wrong


def test_cel_calls_use_the_form_the_api_server_compiles(schema: dict[str, Any]) -> None:
    for rule in iter_rules(schema):
        assert call_form_errors(rule.rule) == [], rule


def test_every_rule_shows_its_message(schema: dict[str, Any]) -> None:
    """The API server reports `reason: FieldValueDuplicate` as `Duplicate value: "object"`,
    without the rule's message: no rule may use it."""
    for rule in iter_rules(schema):
        assert rule.reason in (None, "FieldValueInvalid", "FieldValueForbidden"), rule
        assert rule.message != rule.rule, rule


def test_quantity_pattern_is_the_operators(schema: dict[str, Any]) -> None:
    for path in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            node = schema["properties"]["spec"]["properties"]["containers"]["items"]
            node = node["properties"]["resources"]["properties"][path]["properties"][resource]
            assert node["pattern"] == QUANTITY_PATTERN


def test_every_cel_rule_compiles(cel: CelValidator | None) -> None:
    assert len(require(cel).compile_all()) >= 8


# --- the CRD and virtualpod.core.spec agree ------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
def test_example_is_accepted_by_the_crd_and_by_the_operator(
    path: Path, schema: dict[str, Any], cel: CelValidator | None
) -> None:
    (obj,) = documents(path)
    assert prune(obj, schema) == obj, "the example has fields the API server would drop"
    assert admit(obj, schema, cel) == []
    parse_virtualpod(obj)


def vpod(**spec: Any) -> dict[str, Any]:
    spec.setdefault("containers", [{"name": "app", "image": "busybox"}])
    return {
        "apiVersion": "virtualpod.dev/v1alpha1",
        "kind": "VirtualPod",
        "metadata": {"name": "vm", "namespace": "default"},
        "spec": spec,
    }


def container(name: str = "app", **resources: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "resources": resources} if resources else {"name": name}


GOOD = {
    "request equals limit, spelled differently": vpod(
        containers=[
            container(
                requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1000m", "memory": "1024Mi"}
            )
        ]
    ),
    "integer quantities": vpod(
        containers=[
            container(
                requests={"cpu": 1, "memory": 1073741824}, limits={"cpu": 2, "memory": 2147483648}
            )
        ]
    ),
    "integer request, string limit": vpod(
        containers=[container(requests={"cpu": 1}, limits={"cpu": "1500m"})]
    ),
    "string request, integer limit": vpod(
        containers=[container(requests={"memory": "1G"}, limits={"memory": 1000000000})]
    ),
    "exponent and decimal spellings": vpod(
        containers=[
            container(
                requests={"cpu": "0.5", "memory": "1e3"}, limits={"cpu": ".75", "memory": "1.5Ki"}
            )
        ]
    ),
    "limit only": vpod(containers=[container(limits={"cpu": "250m", "memory": "64Mi"})]),
    "init container and app container": vpod(
        initContainers=[container("init")], containers=[container("app")]
    ),
    "disk boot, raw": vpod(boot={"disk": {"path": "/var/lib/vm/a.img", "format": "raw"}}),
    "kernel boot": vpod(
        boot={
            "kernel": {
                "path": "/boot/vmlinuz",
                "initrd": "/boot/initrd.img",
                "cmdline": "console=ttyS0 quiet",
            }
        }
    ),
    "hidden file and dotted names": vpod(boot={"disk": {"path": "/srv/.images/vm..1.qcow2"}}),
    "priority and class, suspend mode, node": vpod(
        priority=-5, priorityClassName="batch-low", suspendMode="Pause", nodeName="host-1.lab"
    ),
    "placement as in a PodSpec": vpod(
        nodeSelector={"disk": "ssd"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "vm", "effect": "NoSchedule"}
        ],
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 10,
                        "preference": {
                            "matchFields": [
                                {"key": "metadata.name", "operator": "In", "values": ["n1"]}
                            ]
                        },
                    }
                ],
            },
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app": "db"}},
                        },
                    }
                ]
            },
        },
    ),
}


@pytest.mark.parametrize("obj", list(GOOD.values()), ids=list(GOOD))
def test_accepted_by_both(
    obj: dict[str, Any], schema: dict[str, Any], cel: CelValidator | None
) -> None:
    assert admit(obj, schema, cel) == []
    parse_virtualpod(obj)


def with_name(name: str) -> dict[str, Any]:
    obj = vpod()
    obj["metadata"]["name"] = name
    return obj


# (object, a phrase the API server's error must contain)
BAD = {
    "cpu request above limit": (
        vpod(containers=[container(requests={"cpu": "600m"}, limits={"cpu": "500m"})]),
        "cpu request must be less than or equal to cpu limit",
    ),
    "memory request above limit, different units": (
        vpod(containers=[container(requests={"memory": "1Gi"}, limits={"memory": "1000Mi"})]),
        "memory request must be less than or equal to memory limit",
    ),
    "integer request above string limit": (
        vpod(containers=[container(requests={"cpu": 2}, limits={"cpu": "1500m"})]),
        "cpu request must be less than or equal to cpu limit",
    ),
    "string request above integer limit": (
        vpod(
            initContainers=[container("init", requests={"memory": "2k"}, limits={"memory": 1999})]
        ),
        "memory request must be less than or equal to memory limit",
    ),
    "integer request above integer limit": (
        vpod(containers=[container(requests={"cpu": 3}, limits={"cpu": 2})]),
        "cpu request must be less than or equal to cpu limit",
    ),
    "duplicate container names": (
        vpod(containers=[container("app"), container("app")]),
        "container names must be unique",
    ),
    "name shared by an init container": (
        vpod(initContainers=[container("app")], containers=[container("app")]),
        "unique across containers and initContainers",
    ),
    "garbage quantity": (vpod(containers=[container(limits={"cpu": "one"})]), "does not match"),
    "two decimal points": (
        vpod(containers=[container(requests={"memory": "1.5.5Gi"})]),
        "does not match",
    ),
    "unknown suffix": (vpod(containers=[container(limits={"memory": "1GB"})]), "does not match"),
    "negative string quantity": (
        vpod(containers=[container(requests={"cpu": "-1"})]),
        "does not match",
    ),
    "exponent beyond two digits": (
        vpod(containers=[container(limits={"cpu": "1e999"})]),
        "does not match",
    ),
    "more integer digits than int64 milli-units hold": (
        vpod(containers=[container(requests={"memory": "1" * 60})]),
        "does not match",
    ),
    "fractional exponent": (
        vpod(containers=[container(requests={"cpu": "1e1.5"})]),
        "does not match",
    ),
    "integer beyond int64 milli-units": (
        vpod(containers=[container(limits={"memory": 2**62})]),
        "must be at most 9223372036854775807m",
    ),
    "negative integer quantity": (
        vpod(containers=[container(limits={"memory": -1})]),
        "must not be negative",
    ),
    "uppercase container name": (vpod(containers=[container("Web")]), "does not match"),
    "container name too long": (vpod(containers=[container("a" * 64)]), "is too long"),
    "no containers": (vpod(containers=[]), "should be non-empty"),
    "containers missing": (
        {
            "apiVersion": "virtualpod.dev/v1alpha1",
            "kind": "VirtualPod",
            "metadata": {"name": "vm"},
            "spec": {"priority": 1},
        },
        "'containers' is a required property",
    ),
    "container without a name": (vpod(containers=[{"image": "x"}]), "'name' is a required"),
    "object name not a DNS label": (with_name("web.v2"), "metadata.name must be a DNS-1123 label"),
    "disk and kernel both": (
        vpod(boot={"disk": {"path": "/a.img"}, "kernel": {"path": "/vmlinuz"}}),
        "set either disk or kernel, not both",
    ),
    "relative disk path": (vpod(boot={"disk": {"path": "images/a.qcow2"}}), "does not match"),
    "dot-dot in kernel path": (
        vpod(boot={"kernel": {"path": "/boot/../vmlinuz"}}),
        "does not match",
    ),
    "dot segment in initrd path": (
        vpod(boot={"kernel": {"path": "/vmlinuz", "initrd": "/boot/./initrd"}}),
        "does not match",
    ),
    "control character in path": (vpod(boot={"disk": {"path": "/a\nb.img"}}), "does not match"),
    "root is not a file": (vpod(boot={"disk": {"path": "/"}}), "does not match"),
    "disk without path": (vpod(boot={"disk": {"format": "raw"}}), "'path' is a required"),
    "unknown disk format": (
        vpod(boot={"disk": {"path": "/a.vmdk", "format": "vmdk"}}),
        "is not one of",
    ),
    "control character in cmdline": (
        vpod(boot={"kernel": {"path": "/vmlinuz", "cmdline": "a\x07b"}}),
        "does not match",
    ),
    "unknown suspend mode": (vpod(suspendMode="Hibernate"), "is not one of"),
    "priority beyond int32": (vpod(priority=2**31), "is greater than the maximum"),
    "priority not an integer": (vpod(priority="high"), "is not of type 'integer'"),
    "priority class not a DNS subdomain": (vpod(priorityClassName="Batch_Low"), "does not match"),
    "node name not a DNS subdomain": (vpod(nodeName="host 1"), "does not match"),
    "node selector value not a string": (vpod(nodeSelector={"disk": 1}), "is not of type"),
    "tolerations not a list": (vpod(tolerations={"key": "a"}), "is not of type"),
}


@pytest.mark.parametrize(("obj", "phrase"), list(BAD.values()), ids=list(BAD))
def test_rejected_by_both(
    obj: dict[str, Any], phrase: str, schema: dict[str, Any], cel: CelValidator | None
) -> None:
    if any(phrase in rule.message for rule in iter_rules(schema)):
        require(cel)
    errors = admit(obj, schema, cel)
    assert any(phrase in error for error in errors), errors
    with pytest.raises(SpecError):
        parse_virtualpod(obj)


@pytest.mark.parametrize(
    "value", ["9999999999999999", "9223372036854776", "9000Pi", "10Ei", "99e15"]
)
def test_magnitudes_the_pattern_lets_through_are_refused_by_the_operator(
    value: str, schema: dict[str, Any], cel: CelValidator | None
) -> None:
    """Bounding a string's value exactly would cost a quantity() per field: the CRD
    refuses gross magnitudes by pattern, the operator the rest, naming the field."""
    obj = vpod(containers=[container(limits={"cpu": value})])
    assert admit(obj, schema, cel) == []
    with pytest.raises(SpecError, match=r"spec.containers\[0\].resources.limits.cpu: .*at most"):
        parse_virtualpod(obj)


def test_more_containers_than_the_schema_allows_are_rejected(schema: dict[str, Any]) -> None:
    """The cap keeps the CEL cost estimate bounded; the operator itself has no cap."""
    obj = vpod(containers=[container(f"c{index}") for index in range(16)])
    assert any("is too long" in error for error in openapi_errors(obj, schema))


def test_unknown_fields_are_pruned_before_the_operator_sees_them(
    schema: dict[str, Any], cel: CelValidator | None
) -> None:
    clean = vpod(containers=[container(requests={"cpu": "100m"}, limits={"cpu": "200m"})])
    dirty = copy.deepcopy(clean)
    dirty["spec"]["hostNetwork"] = True
    dirty["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    dirty["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 1
    dirty["spec"]["boot"] = {"disk": {"path": "/a.img", "bus": "virtio"}}
    kopf = {  # the agent's Kopf bookkeeping (kube.common.configure): kept whole
        "progress": {"create": {"retries": 1}},
        "last-handled-configuration": '{"spec":{"containers":[]}}',
    }
    dirty["status"] = {"phase": "Running", "kopf": kopf, "whatever": 1}
    pruned = prune(dirty, schema)
    expected = copy.deepcopy(clean)
    expected["spec"]["boot"] = {"disk": {"path": "/a.img"}}
    expected["status"] = {"phase": "Running", "kopf": kopf}
    assert pruned == expected
    assert admit(dirty, schema, cel) == []
    parse_virtualpod(pruned)
    # Without an API server in front (e.g. an emulator), the operator rejects them itself.
    with pytest.raises(SpecError, match="unknown field"):
        parse_virtualpod(dirty)


STATUS = {
    "qosClass": "Burstable",
    "phase": "Suspended",
    "reason": "MemoryPressure",
    "message": "suspended to free memory: host memory.available 80Mi < 100Mi",
    "observedGeneration": 3,
    "podName": "web",
    "nodeName": "node-a",
    "admitted": {
        "containers": [
            {"name": "app", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": 1}}}
        ],
        "initContainers": [],
    },
    "suspendedAt": "2025-01-01T00:00:00Z",
    "suspendReason": "MemoryPressure",
    "vm": {
        "domainName": "default-web",
        "uuid": "7d3b2c1e-8f00-4e4a-9d1c-0a1b2c3d4e5f",
        "host": "host-1",
        "vcpus": 2,
        "memory": "1Gi",
        "state": "shutoff",
        "suspendMode": "Save",
        "restartCount": 1,
    },
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Suspended",
            "message": "managed save",
            "lastTransitionTime": "2025-01-01T00:00:00Z",
            "observedGeneration": 3,
        }
    ],
}


def test_status_shape_is_kept_whole(schema: dict[str, Any]) -> None:
    obj = vpod()
    obj["status"] = STATUS
    assert prune(obj, schema)["status"] == STATUS
    assert openapi_errors(obj, schema) == []


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        ({"phase": "Sleeping"}, "is not one of"),
        ({"qosClass": "guaranteed"}, "is not one of"),
        ({"conditions": [{"type": "Ready", "status": "Maybe"}]}, "is not one of"),
        (
            {"conditions": [{"type": "Ready", "status": "True", "reason": "not camel"}]},
            "does not match",
        ),
    ],
)
def test_status_rejects_what_no_reader_expects(
    status: dict[str, Any], phrase: str, schema: dict[str, Any]
) -> None:
    obj = vpod()
    obj["status"] = status
    assert any(phrase in error for error in openapi_errors(obj, schema))


# --- deployment -----------------------------------------------------------------------


def test_settings_configmap_is_the_defaults_with_the_system_libvirt() -> None:
    configmap = find("ConfigMap", "virtualpod-settings")
    assert configmap["metadata"]["namespace"] == OPERATOR_NAMESPACE
    text = configmap["data"]["settings.yaml"]
    changed = [
        (ours, default)
        for ours, default in zip(text.splitlines(), DEFAULTS_YAML.splitlines(), strict=True)
        if ours != default
    ]
    assert [ours.split("#")[0].strip() for ours, _ in changed] == ["libvirtURI: qemu:///system"]
    settings = settings_from_mapping(yaml.safe_load(text))
    assert settings == Settings(libvirt_uri="qemu:///system")


AGENT, CONTROLLER = "virtualpod-agent", "virtualpod-controller"


def agent_pod() -> dict[str, Any]:
    return find("DaemonSet", AGENT)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def controller_pod() -> dict[str, Any]:
    return find("Deployment", CONTROLLER)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def check_liveness(container: dict[str, Any], url: str) -> None:
    probe = container["livenessProbe"]["httpGet"]
    port = {port["name"]: port["containerPort"] for port in container["ports"]}[probe["port"]]
    assert f"http://0.0.0.0:{port}{probe['path']}" == url


def test_agent_command_line_is_one_virtualpod_run_accepts() -> None:
    (agent,) = agent_pod()["containers"]
    argv = [arg.replace("$(HOST_NAME)", "node-1") for arg in agent["args"]]
    assert agent["command"] == ["virtualpod"]
    args = cli.build_parser().parse_args(argv)
    assert args.role == "agent"
    assert args.config == SETTINGS_PATH
    assert args.host_name == "node-1"
    assert args.standalone is True
    env = {item["name"]: item for item in agent["env"]}
    assert env["HOST_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    check_liveness(agent, args.liveness)


def test_controller_command_line_is_one_virtualpod_run_accepts() -> None:
    deployment = find("Deployment", CONTROLLER)
    (controller,) = controller_pod()["containers"]
    args = cli.build_parser().parse_args(controller["args"])
    assert controller["command"] == ["virtualpod"]
    assert args.role == "controller"
    assert args.config == SETTINGS_PATH
    assert args.standalone is False  # its replicas peer: one is active
    assert deployment["spec"]["replicas"] >= 2
    # Only Kopf's CRD: the controller creates its peering object, so one `apply -k` on a
    # fresh cluster never sends an object of a kind that is not served yet.
    find("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev")
    shipped = {doc["kind"] for path in deploy_files() for doc in documents(path)}
    assert "ClusterKopfPeering" not in shipped
    check_liveness(controller, args.liveness)


def mounts_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = pod["containers"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    return {mount["mountPath"]: volumes[mount["name"]] for mount in container["volumeMounts"]}


def test_agent_mounts_its_settings_and_the_libvirt_socket() -> None:
    mounts = mounts_of(agent_pod())
    settings_dir, settings_file = SETTINGS_PATH.rsplit("/", 1)
    config = mounts[settings_dir]["configMap"]
    assert config["name"] == "virtualpod-settings"
    assert {"key": "settings.yaml", "path": settings_file} in config["items"]
    socket_dir = LIBVIRT_SOCKET.rsplit("/", 1)[0]
    assert mounts[socket_dir]["hostPath"]["path"] == socket_dir


def test_controller_mounts_its_settings_and_nothing_of_the_host() -> None:
    mounts = mounts_of(controller_pod())
    assert mounts[SETTINGS_PATH.rsplit("/", 1)[0]]["configMap"]["name"] == "virtualpod-settings"
    assert not any("hostPath" in volume for volume in mounts.values())


@pytest.mark.parametrize(("pod", "account"), [(agent_pod, AGENT), (controller_pod, CONTROLLER)])
def test_roles_run_with_least_privilege(pod: Any, account: str) -> None:
    spec = pod()
    (container,) = spec["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")
    for host_namespace in ("hostPID", "hostNetwork", "hostIPC"):
        assert not spec.get(host_namespace), host_namespace
    assert spec["serviceAccountName"] == find("ServiceAccount", account)["metadata"]["name"]
    assert "memory" in container["resources"]["limits"]


def test_the_controller_runs_as_non_root() -> None:
    assert controller_pod()["securityContext"]["runAsNonRoot"] is True


def test_priority_classes_exist_for_the_roles_and_the_examples() -> None:
    wanted = {agent_pod()["priorityClassName"], controller_pod()["priorityClassName"]} | {
        doc["spec"]["priorityClassName"]
        for path in EXAMPLES
        for doc in documents(path)
        if "priorityClassName" in doc["spec"]
    }
    for name in wanted:
        find("PriorityClass", name)


# --- RBAC -----------------------------------------------------------------------------

# (apiGroup, resource, verb): every API call the agent makes, and why.
AGENT_API_CALLS = {
    ("virtualpod.dev", "virtualpods", "list"): "Kopf: initial listing (its node's label)",
    ("virtualpod.dev", "virtualpods", "watch"): "Kopf: the watch stream (its node's label)",
    ("virtualpod.dev", "virtualpods", "patch"): "Kopf: its finalizer (removed after delete)",
    ("virtualpod.dev", "virtualpods/status", "patch"): "status and conditions",
    ("", "events", "create"): "kopf.event/info/warn",
    ("", "secrets", "get"): "env valueFrom secretKeyRef, for the cloud-init seed",
    ("", "configmaps", "get"): "env valueFrom configMapKeyRef, for the cloud-init seed",
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "Kopf: resource scanning",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "Kopf: resource scanning",
    ("scheduling.k8s.io", "priorityclasses", "get"): "priorityClassName -> priority",
    ("scheduling.k8s.io", "priorityclasses", "list"): "priorityClassName -> priority",
    ("scheduling.k8s.io", "priorityclasses", "watch"): "priorityClassName -> priority",
}

# Every API call the controller makes (kube/controller.py), and why.
CONTROLLER_API_CALLS = {
    ("virtualpod.dev", "virtualpods", "list"): "Kopf: initial listing",
    ("virtualpod.dev", "virtualpods", "watch"): "Kopf: the watch stream",
    ("virtualpod.dev", "virtualpods", "patch"): "node label, admitted digest, finalizer",
    ("virtualpod.dev", "virtualpods/status", "patch"): "binding and the Scheduled condition",
    ("", "pods", "list"): "Kopf: companion Pods (label selector)",
    ("", "pods", "watch"): "Kopf: companion Pods (label selector)",
    ("", "pods", "create"): "the companion Pod",
    ("", "pods", "delete"): "an ended or outdated companion Pod, or its VirtualPod's",
    ("", "events", "create"): "QuotaExceeded, FailedScheduling, PodRecreated, InvalidSpec",
    ("coordination.k8s.io", "leases", "list"): "Kopf: the agents' host Leases",
    ("coordination.k8s.io", "leases", "watch"): "Kopf: the agents' host Leases",
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"): "Kopf: resource scanning",
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"): "Kopf: resource scanning",
    ("kopf.dev", "clusterkopfpeerings", "get"): "Kopf peering",
    ("kopf.dev", "clusterkopfpeerings", "list"): "Kopf peering",
    ("kopf.dev", "clusterkopfpeerings", "watch"): "Kopf peering",
    ("kopf.dev", "clusterkopfpeerings", "patch"): "Kopf peering: keep-alive",
    ("kopf.dev", "clusterkopfpeerings", "create"): "the peering object, when missing",
}


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.parametrize(
    ("name", "calls"), [(AGENT, AGENT_API_CALLS), (CONTROLLER, CONTROLLER_API_CALLS)]
)
def test_rbac_grants_each_role_exactly_what_it_uses(
    name: str, calls: dict[tuple[str, str, str], str]
) -> None:
    role = find("ClusterRole", name)
    grants = granted(role)
    assert not any("*" in grant for grant in grants)
    assert grants == set(calls)
    assert all("resourceNames" not in rule for rule in role["rules"])


def test_no_libvirt_host_access_for_the_controller_and_no_pods_for_the_agent() -> None:
    assert not any(r == "pods" for _, r, _ in granted(find("ClusterRole", AGENT)))
    assert not any(g == "kopf.dev" for g, _, _ in granted(find("ClusterRole", AGENT)))


#: The agent's calls in its own namespace: the host's Lease (PATCH to renew, first create).
AGENT_LEASE_CALLS = {
    ("coordination.k8s.io", "leases", "create"): "a new host's first renewal",
    ("coordination.k8s.io", "leases", "patch"): "renewal with measured memory",
}


def subject(account: str) -> list[dict[str, str]]:
    found = find("ServiceAccount", account)
    return [
        {
            "kind": "ServiceAccount",
            "name": found["metadata"]["name"],
            "namespace": found["metadata"]["namespace"],
        }
    ]


def test_the_agents_lease_role_grants_exactly_its_lease_calls_in_its_namespace() -> None:
    role = find("Role", "virtualpod-agent-leases")
    binding = find("RoleBinding", "virtualpod-agent-leases")
    assert granted(role) == set(AGENT_LEASE_CALLS)
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert role["metadata"]["namespace"] == Settings().namespace == OPERATOR_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "virtualpod-agent-leases",
    }
    assert binding["subjects"] == subject(AGENT)


@pytest.mark.parametrize("name", [AGENT, CONTROLLER])
def test_each_role_is_bound_to_its_own_service_account(name: str) -> None:
    binding = find("ClusterRoleBinding", name)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": name,
    }
    assert binding["subjects"] == subject(name)
    assert find("ServiceAccount", name)["metadata"]["namespace"] == OPERATOR_NAMESPACE
    assert find("Namespace", OPERATOR_NAMESPACE)


def test_runtime_class_overhead_is_the_vmm_overhead() -> None:
    """The scheduler counts each VM's QEMU memory through the companion Pod's RuntimeClass."""
    from virtualpod.core.companion import LIBVIRT_HOST_LABEL, RUNTIME_CLASS
    from virtualpod.core.quantity import parse_bytes

    runtime_class = find("RuntimeClass", RUNTIME_CLASS)
    fixed = runtime_class["overhead"]["podFixed"]
    assert parse_bytes(fixed["memory"], "podFixed.memory") == Settings().vmm_overhead.memory_bytes
    assert runtime_class["scheduling"]["nodeSelector"] == {LIBVIRT_HOST_LABEL: "true"}
