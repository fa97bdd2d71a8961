"""The real Kubernetes OpenAPI schemas (v1.37, from the ``kubernetes_validate`` package).

``kubernetes_validate.validate`` reads and parses the 1.8 MB definitions file on every call
(about 15 ms) and validates in pure Python (0.4 ms for a Deployment, 3 ms for a pod with its
status); here each kind's validator is built once and cached, and is the Rust
``jsonschema_rs`` when installed (a few microseconds per object). The same definitions drive strategic merge patches: they carry
``x-kubernetes-patch-strategy`` and ``x-kubernetes-patch-merge-key``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import Any, cast

from . import errors
from .errors import Cause
from .resources import KUBERNETES_VERSION, ResourceType

Schema = dict[str, Any]

_DIRECTORY = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"


def _read(name: str) -> Schema:
    path = importlib_resources.files("kubernetes_validate").joinpath(f"{_DIRECTORY}/{name}")
    return cast(Schema, json.loads(path.read_text()))


@functools.cache
def _definitions_document() -> Schema:
    return _read("_definitions.json")


def definitions() -> dict[str, Schema]:
    return cast(dict[str, Schema], _definitions_document()["$defs"])


def _file_name(api_version: str, kind: str) -> str:
    # What kubernetes_validate does: apps/v1 → apps-v1, rbac.authorization.k8s.io/v1 → rbac-v1.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    return f"{kind.lower()}-{group_version}.json"


@functools.cache
def root_schema(api_version: str, kind: str) -> Schema:
    return _read(_file_name(api_version, kind))


@dataclass(frozen=True)
class SchemaError:
    """One schema violation, whichever validator found it."""

    keyword: str  # type, additionalProperties, required, enum, ...
    path: tuple[str | int, ...]
    message: str
    instance: Any
    allowed: tuple[Any, ...] = ()


Check = Callable[[Any], list[SchemaError]]


@functools.cache
def _check(api_version: str, kind: str) -> Check:
    """A cached validator for one kind: the Rust ``jsonschema_rs`` when it is installed
    (a pod in a few microseconds), else the pure-Python ``jsonschema`` (a few milliseconds)."""
    schema = root_schema(api_version, kind)
    try:
        import jsonschema_rs
    except ImportError:
        return _python_check(schema)
    registry = jsonschema_rs.Registry([(_DEFINITIONS_URI, _definitions_document())])
    validator = jsonschema_rs.Draft202012Validator(
        schema, registry=registry, base_uri=schema["$id"]
    )

    def check(obj: Any) -> list[SchemaError]:
        if validator.is_valid(obj):
            return []
        return [
            SchemaError(
                _RS_KEYWORDS.get(type(e.kind).__name__, type(e.kind).__name__),
                tuple(e.instance_path),
                e.message,
                e.instance,
                tuple(getattr(e.kind, "options", ()) or ()),
            )
            for e in validator.iter_errors(obj)
        ]

    return check


_DEFINITIONS_URI = "https://kubernetes.io/api/_definitions.json"
_RS_KEYWORDS = {
    "Type": "type",
    "AdditionalProperties": "additionalProperties",
    "Required": "required",
    "Enum": "enum",
    "OneOfNotValid": "oneOf",
    "OneOfMultipleValid": "oneOf",
}


def _python_check(schema: Schema) -> Check:
    import jsonschema  # type: ignore[import-untyped]
    from referencing import Registry, Resource

    registry: Registry[Any] = Resource.from_contents(_definitions_document()) @ Registry()
    registry = Resource.from_contents(schema) @ registry
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)

    def check(obj: Any) -> list[SchemaError]:
        return [
            SchemaError(
                str(e.validator),
                tuple(e.absolute_path),
                str(e.message),
                e.instance,
                tuple(e.validator_value) if e.validator == "enum" else (),
            )
            for e in validator.iter_errors(obj)
        ]

    return check


def resolve(schema: Schema | None) -> Schema | None:
    """Follow a ``$ref`` into the shared definitions (one level is all the files use)."""
    if schema is None:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and "#/$defs/" in ref:
        return definitions().get(ref.split("#/$defs/", 1)[1])
    return schema


def field_path(path: Any) -> str:
    """A jsonschema path as Kubernetes names fields: ``spec.containers[0].image``."""
    text = ""
    for item in path:
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else str(item))
    return text


def validate(rt: ResourceType, obj: dict[str, Any], name: str) -> None:
    """Raise the error a real server gives for a body its schema rejects.

    Decoding errors (a field of the wrong type, or one the schema does not declare) are a
    ``400 BadRequest`` on a real server; missing required fields and unsupported enum values
    are ``422 Invalid``.
    """
    found = sorted(_check(rt.api_version, rt.kind)(obj), key=lambda e: list(map(str, e.path)))
    if not found:
        return
    causes: list[Cause] = []
    for error in found:
        where = field_path(error.path)
        if error.keyword == "additionalProperties":
            unknown = re.findall(r"['\"]([^'\"]+)['\"] was unexpected", error.message) or ["?"]
            prefix = f"{where}." if where else ""
            fields = ", ".join(f'unknown field "{prefix}{u}"' for u in unknown)
            raise errors.bad_request(f"strict decoding error: {fields}")
        if error.keyword in ("type", "oneOf"):
            raise errors.bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                f"{where}: {error.message}"
            )
        if error.keyword == "required":
            missing = re.findall(r"['\"]([^'\"]+)['\"] is a required property", error.message)
            field = f"{where}.{missing[0]}" if where and missing else (missing or [where])[0]
            causes.append(Cause(field, "FieldValueRequired", "Required value"))
        elif error.keyword == "enum":
            allowed = ", ".join(f'"{v}"' for v in error.allowed if v is not None)
            message = f'Unsupported value: "{error.instance}": supported values: {allowed}'
            causes.append(Cause(where, "FieldValueNotSupported", message))
        else:
            message = f"Invalid value: {error.instance!r}: {error.message}"
            causes.append(Cause(where, "FieldValueInvalid", message))
    raise errors.invalid(rt, name, causes)
