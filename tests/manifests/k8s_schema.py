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


def iter_rules(schema: Schema, path: str = "") -> Iterator[Rule]:
    """Every CEL rule of a schema, with where it sits."""
    for entry in schema.get("x-kubernetes-validations", ()):
        yield Rule(path or "<root>", entry["rule"], entry.get("message", entry["rule"]))
    for key, child in schema.get("properties", {}).items():
        yield from iter_rules(child, f"{path}.{key}")
    if isinstance(schema.get("items"), Mapping):
        yield from iter_rules(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), Mapping):
        yield from iter_rules(schema["additionalProperties"], f"{path}{{}}")


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
