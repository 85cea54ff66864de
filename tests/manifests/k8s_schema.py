"""What the API server does with a custom resource before storing it, reproduced offline.

Three steps, in the API server's order: prune fields the structural schema does not
know, validate against the OpenAPI v3 schema, evaluate the CEL
`x-kubernetes-validations` rules. The CEL rules run on a real CEL interpreter
(cel-python); the Kubernetes `quantity()` library it lacks is added here, on top of
`kubernetes.utils.parse_quantity` so that quantities compare exactly as the operator
parses them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import total_ordering
from typing import Any

import jsonschema  # type: ignore[import-untyped]
from kubernetes.utils import parse_quantity

Schema = Mapping[str, Any]


def prune(value: Any, schema: Schema) -> Any:
    """Drop object fields the schema does not declare, as structural pruning does."""
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return copy.deepcopy(value)
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if properties is not None:
            return {
                key: prune(item, properties[key])
                for key, item in value.items()
                if key in properties
            }
        if isinstance(additional, Mapping):
            return {key: prune(item, additional) for key, item in value.items()}
        if schema.get("type") == "object" and not properties:
            # `metadata: {type: object}` is kept as is (the API server owns it).
            return copy.deepcopy(value)
        return {}
    if isinstance(value, list) and "items" in schema:
        return [prune(item, schema["items"]) for item in value]
    return copy.deepcopy(value)


def openapi_errors(value: Any, schema: Schema) -> list[str]:
    """OpenAPI v3 (JSON-schema) violations, each as `path: message`."""
    validator = jsonschema.Draft7Validator(dict(schema))
    return [
        f"{'.'.join(str(part) for part in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(value)
    ]


@dataclass(frozen=True)
class Rule:
    """One `x-kubernetes-validations` entry and the schema path it is declared at."""

    schema_path: str
    rule: str
    message: str
    #: How often the API server's cost estimator assumes the rule runs per object: the
    #: product of the `maxItems`/`maxProperties` of the lists and maps around it.
    cardinality: int = 1
    reason: str | None = None


def iter_rules(schema: Schema, path: str = "", cardinality: int = 1) -> Iterator[Rule]:
    """Every CEL rule of a schema, with where it sits."""
    for entry in schema.get("x-kubernetes-validations", ()):
        yield Rule(
            path or "<root>",
            entry["rule"],
            entry.get("message", entry["rule"]),
            cardinality,
            entry.get("reason"),
        )
    for key, child in schema.get("properties", {}).items():
        yield from iter_rules(child, f"{path}.{key}", cardinality)
    if isinstance(schema.get("items"), Mapping):
        inner = cardinality * schema.get("maxItems", UNBOUNDED)
        yield from iter_rules(schema["items"], f"{path}[]", inner)
    if isinstance(schema.get("additionalProperties"), Mapping):
        inner = cardinality * schema.get("maxProperties", UNBOUNDED)
        yield from iter_rules(schema["additionalProperties"], f"{path}{{}}", inner)


#: What the estimator assumes for a list or map without a bound (effectively: too many).
UNBOUNDED = 10**9

#: How Kubernetes' CEL quantity library declares its functions (k8s.io/apiserver,
#: pkg/cel/library/quantity.go): `quantity`, `isQuantity` and `sign` are global functions,
#: the rest are members. cel-python accepts either spelling of both kinds; the API server
#: compiles only the declared one (`q.sign()`: "found no matching overload for 'sign'").
GLOBAL_FUNCTIONS = ("quantity", "isQuantity", "sign")
MEMBER_FUNCTIONS = (
    "isInteger",
    "asInteger",
    "asApproximateFloat",
    "add",
    "sub",
    "isGreaterThan",
    "isLessThan",
    "compareTo",
)


def call_form_errors(rule: str) -> list[str]:
    """Calls in `rule` spelled in a form the API server does not compile."""
    errors = [
        f"{name}() is a function: {name}(x), not x.{name}()"
        for name in GLOBAL_FUNCTIONS
        if re.search(rf"\.\s*{name}\s*\(", rule)
    ]
    errors += [
        f"{name}() is a member: x.{name}(...), not {name}(x, ...)"
        for name in MEMBER_FUNCTIONS
        if re.search(rf"(?<![.\w]){name}\s*\(", rule)
    ]
    return errors


@total_ordering
class Quantity:
    """The CEL `kubernetes.Quantity` value: a Kubernetes quantity compared by amount."""

    def __init__(self, amount: Decimal) -> None:
        self.amount = amount

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Quantity) and self.amount == other.amount

    def __lt__(self, other: Quantity) -> bool:
        return self.amount < other.amount

    def __hash__(self) -> int:
        return hash(self.amount)


def _parse(text: str) -> Decimal:
    return Decimal(parse_quantity(str(text)))  # type: ignore[no-untyped-call]


def _kubernetes_cel_functions() -> dict[str, Any]:
    """The parts of the Kubernetes CEL quantity library the CRD's rules use."""
    from celpy import celtypes

    def quantity(text: Any) -> Quantity:
        return Quantity(_parse(text))

    def is_quantity(text: Any) -> Any:
        try:
            _parse(text)
        except (ValueError, TypeError, InvalidOperation):
            return celtypes.BoolType(False)
        return celtypes.BoolType(True)

    def compare_to(left: Quantity, right: Quantity) -> Any:
        return celtypes.IntType((left.amount > right.amount) - (left.amount < right.amount))

    def sign(value: Quantity) -> Any:
        return celtypes.IntType((value.amount > 0) - (value.amount < 0))

    def sub(left: Quantity, right: Quantity | int) -> Quantity:
        amount = right.amount if isinstance(right, Quantity) else Decimal(int(right))
        return Quantity(left.amount - amount)

    return {
        "quantity": quantity,
        "isQuantity": is_quantity,
        "compareTo": compare_to,
        "sign": sign,
        "sub": sub,
    }


class CelValidator:
    """Evaluates every CEL rule of a structural schema against an object, like the API server."""

    def __init__(self, schema: Schema) -> None:
        import celpy
        from celpy.adapter import json_to_cel
        from celpy.celtypes import BoolType
        from celpy.evaluation import CELEvalError

        self._json_to_cel = json_to_cel
        self._bool = BoolType
        self._eval_error = CELEvalError
        self._env = celpy.Environment()
        self._functions = _kubernetes_cel_functions()
        self._schema = schema
        self._programs: dict[str, Any] = {}

    def compile_all(self) -> list[Rule]:
        """Compile every rule (a syntax error fails here); return them."""
        rules = list(iter_rules(self._schema))
        for rule in rules:
            self._program(rule.rule)
        return rules

    def _program(self, rule: str) -> Any:
        if rule not in self._programs:
            self._programs[rule] = self._env.program(
                self._env.compile(rule), functions=self._functions
            )
        return self._programs[rule]

    def errors(self, value: Any) -> list[str]:
        """Messages of the rules `value` violates, each as `path: message`."""
        found: list[str] = []
        self._walk(value, self._schema, "", found)
        return found

    def _walk(self, value: Any, schema: Schema, path: str, found: list[str]) -> None:
        for entry in schema.get("x-kubernetes-validations", ()):
            if not self._holds(entry["rule"], value):
                found.append(f"{path or '<root>'}: {entry.get('message', entry['rule'])}")
        if isinstance(value, dict):
            for key, child in schema.get("properties", {}).items():
                if key in value:
                    self._walk(value[key], child, f"{path}.{key}", found)
        elif isinstance(value, list) and isinstance(schema.get("items"), Mapping):
            for index, item in enumerate(value):
                self._walk(item, schema["items"], f"{path}[{index}]", found)

    def _holds(self, rule: str, value: Any) -> bool:
        """True when the rule evaluates to true; false on false or an evaluation error."""
        try:
            result = self._program(rule).evaluate({"self": self._json_to_cel(value)})
        except self._eval_error:
            return False
        return isinstance(result, self._bool) and bool(result)


def admit(obj: Mapping[str, Any], schema: Schema, cel: CelValidator | None) -> list[str]:
    """Everything the API server would reject `obj` for (after pruning); [] = accepted."""
    pruned = prune(obj, schema)
    errors = openapi_errors(pruned, schema)
    if cel is not None:
        errors += cel.errors(pruned)
    return errors


def quantity_calls_on_fields(rule: str) -> int:
    """quantity() calls on fields along the costliest path of `rule`, as the estimator
    counts: both sides of `&&`/`||`, the worse branch of `c ? a : b`."""
    import celpy

    return _worst_path(celpy.Environment().compile(rule))


def _worst_path(node: Any) -> int:
    children = getattr(node, "children", None)
    if children is None:
        return 0
    if node.data == "expr" and len(children) == 3:
        return _worst_path(children[0]) + max(_worst_path(children[1]), _worst_path(children[2]))
    own = node.data == "ident_arg" and str(children[0]) == "quantity" and _mentions_self(node)
    return int(own) + sum(_worst_path(child) for child in children)


def _mentions_self(node: Any) -> bool:
    children = getattr(node, "children", None)
    if children is None:
        return str(node) == "self"
    return any(_mentions_self(child) for child in children)
