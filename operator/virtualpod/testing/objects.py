"""What the emulated API serves, as data: resources, errors, patches and selectors.

Pure functions over JSON-shaped dicts, so the API semantics the operator depends on
(RFC 6902 JSON patch with a 422 for a failed `test`, RFC 7386 merge patch, label and
field selectors) read and test apart from storage and HTTP.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from virtualpod.core.spec import API_GROUP, API_VERSION, KIND

JSON = dict[str, Any]


class ApiError(Exception):
    """An error answered as a Kubernetes `Status` object."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message

    def status(self) -> JSON:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass(frozen=True)
class ResourceSpec:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()

    @functools.cached_property
    def key(self) -> str:
        """`group/version/plural` (`version/plural` for the core group): read on every
        request and for every change a watch looks at, so made once."""
        return (
            f"{self.group}/{self.version}/{self.plural}"
            if self.group
            else (f"{self.version}/{self.plural}")
        )

    @functools.cached_property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(frozen=True)
class Target:
    """What an object URL addresses."""

    resource: ResourceSpec
    namespace: str | None
    name: str | None
    subresource: str | None


VERBS = {"create", "delete", "get", "list", "patch", "update", "watch"}

#: Resources Kopf and this operator use, besides the VirtualPod CRD itself.
BUILTIN_RESOURCES = (
    ResourceSpec(
        "", "v1", "namespaces", "Namespace", namespaced=False, subresources=frozenset({"status"})
    ),
    ResourceSpec("", "v1", "events", "Event", namespaced=True),
    ResourceSpec("", "v1", "configmaps", "ConfigMap", namespaced=True),
    ResourceSpec("", "v1", "secrets", "Secret", namespaced=True),
    ResourceSpec("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False),
    ResourceSpec("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    ResourceSpec(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        subresources=frozenset({"status"}),
    ),
    # Cluster mode: companion Pods, the Nodes they bind to, the admission objects that
    # apply to them and Kopf's peering for the controller.
    ResourceSpec("", "v1", "pods", "Pod", namespaced=True, subresources=frozenset({"status"})),
    ResourceSpec("", "v1", "nodes", "Node", namespaced=False, subresources=frozenset({"status"})),
    ResourceSpec("", "v1", "limitranges", "LimitRange", namespaced=True),
    ResourceSpec(
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        namespaced=True,
        subresources=frozenset({"status"}),
    ),
    ResourceSpec("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", namespaced=False),
    ResourceSpec("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    ResourceSpec("kopf.dev", "v1", "kopfpeerings", "KopfPeering", namespaced=True),
)
VIRTUALPODS = ResourceSpec(
    API_GROUP, API_VERSION, "virtualpods", KIND, namespaced=True, subresources=frozenset({"status"})
)


# ------------------------------------------------------------------------ patches


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def _get(doc: Any, parts: list[str]) -> Any:
    node = doc
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    key = parts[-1]
    if isinstance(parent, list):
        if key == "-":
            parent.append(value)
        else:
            index = int(key)
            if not 0 <= index <= len(parent):
                raise IndexError(key)
            parent.insert(index, value)
    else:
        parent[key] = value
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _parent(doc, parts)
    if isinstance(parent, list):
        del parent[int(parts[-1])]
    else:
        del parent[parts[-1]]
    return doc


def apply_json_patch(doc: JSON, ops: object) -> JSON:
    """RFC 6902; a failed `test` is 422 Unprocessable, as on a real API server."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
    result: Any = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, Mapping) or "op" not in op or "path" not in op:
            raise ApiError(400, "BadRequest", f"malformed JSON patch operation {op!r}")
        kind, parts = op["op"], _pointer(str(op["path"]))
        try:
            if kind == "test":
                if _get(result, parts) != op.get("value"):
                    raise ApiError(
                        422,
                        "Invalid",
                        f"the server rejected our request due to an error in our "
                        f"request: testing value {op['path']} failed",
                    )
            elif kind == "add":
                result = _add(result, parts, copy.deepcopy(op.get("value")))
            elif kind == "remove":
                result = _remove(result, parts)
            elif kind == "replace":
                _get(result, parts)  # must exist
                result = _add(_remove(result, parts), parts, copy.deepcopy(op.get("value")))
            elif kind in ("move", "copy"):
                source = _pointer(str(op.get("from", "")))
                value = copy.deepcopy(_get(result, source))
                if kind == "move":
                    result = _remove(result, source)
                result = _add(result, parts, value)
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch op {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            if kind == "test":
                raise ApiError(422, "Invalid", f"testing value {op['path']} failed") from e
            raise ApiError(
                422, "Invalid", f"JSON patch {kind} {op['path']}: path does not exist"
            ) from e
    if not isinstance(result, dict):
        raise ApiError(422, "Invalid", "a JSON patch must leave an object")
    return result


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, everything else replaces.

    Neither argument is changed; the result is new where the patch merges and shares the
    rest with them (the target's untouched parts, the patch's arrays and values), so
    neither may be changed afterwards (the store's objects and request bodies are not).
    """
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------------- selectors


def _dotted(obj: Mapping[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


#: A label selector term: (operator, key, value); operators "!=", "=", "!" (no such
#: label) and "" (the label is there).
LabelTerm = tuple[str, str, str]
#: A field selector term: (negated, dotted path, value).
FieldTerm = tuple[bool, str, str]


@functools.lru_cache(maxsize=256)
def label_terms(selector: str) -> tuple[LabelTerm, ...]:
    """A label selector, parsed once: a watch applies it to every change."""
    terms: list[LabelTerm] = []
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(("!=", key.strip(), value.strip()))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(("=", key.strip(), value.strip()))
        elif term.startswith("!"):
            terms.append(("!", term[1:].strip(), ""))
        else:
            terms.append(("", term.strip(), ""))
    return tuple(terms)


@functools.lru_cache(maxsize=256)
def field_terms(selector: str) -> tuple[FieldTerm, ...]:
    """A field selector, parsed once (a term without `=` is a ValueError)."""
    terms: list[FieldTerm] = []
    for term in filter(None, selector.split(",")):
        key, value = term.replace("!=", "=").replace("==", "=").split("=", 1)
        terms.append(("!=" in term, key.strip(), value.strip()))
    return tuple(terms)


def _label_holds(labels: Mapping[str, Any], term: LabelTerm) -> bool:
    operator, key, value = term
    if operator == "!=":
        return labels.get(key) != value
    if operator == "=":
        return labels.get(key) == value
    return (key in labels) != (operator == "!")


def matches_selectors(obj: JSON, label_selector: str | None, field_selector: str | None) -> bool:
    if label_selector:
        labels = obj.get("metadata", {}).get("labels") or {}
        if not all(_label_holds(labels, term) for term in label_terms(label_selector)):
            return False
    for negated, key, value in field_terms(field_selector) if field_selector else ():
        actual = _dotted(obj, key)
        if ((str(actual) if actual is not None else "") == value) == negated:
            return False
    return True
