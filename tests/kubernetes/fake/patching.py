"""The patch formats a real server accepts: JSON merge patch (RFC 7386), JSON patch
(RFC 6902), and strategic merge patch, driven by the ``x-kubernetes-patch-strategy`` and
``x-kubernetes-patch-merge-key`` annotations of the real schemas (so ``containers`` merge by
``name``, ``ports`` by ``containerPort``, ``env`` by ``name``, and every other list is
replaced, exactly where Kubernetes does it)."""

from __future__ import annotations

import copy
from typing import Any

from . import errors, schemas
from .schemas import Schema

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

_DELETE = object()  # a map that ``$patch: delete`` removes from its parent


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON patch ------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise errors.bad_request(f'json patch path "{path}" must start with "/"')
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit():
        raise errors.ApiStatusError(422, "Invalid", f"invalid array index: {token}")
    index = int(token)
    if index > len(container) or (not adding and index == len(container)):
        raise errors.ApiStatusError(422, "Invalid", f"array index out of bounds: {index}")
    return index


def _parent(doc: Any, tokens: list[str]) -> Any:
    for token in tokens[:-1]:
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token, adding=False)]
        else:
            raise errors.ApiStatusError(
                422, "Invalid", f"doc is missing path: /{'/'.join(tokens)}: missing value"
            )
    return doc


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, adding=False)]
    raise errors.ApiStatusError(422, "Invalid", f"doc is missing key: /{'/'.join(tokens)}")


def _remove(doc: Any, tokens: list[str]) -> Any:
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise errors.ApiStatusError(
                422, "Invalid", f"Unable to remove nonexistent key: {last}: missing value"
            )
        return parent.pop(last)
    return parent.pop(_index(parent, last, adding=False))


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, adding=True), value)
    else:
        raise errors.ApiStatusError(422, "Invalid", f"doc is missing path: /{'/'.join(tokens)}")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise errors.bad_request("json patch must be a list of operations")
    doc = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), _pointer(str(operation.get("path", "")))
        if op == "add":
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            _remove(doc, path)
        elif op == "replace":
            _get(doc, path)  # replace needs an existing value
            if path:
                _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(operation.get("value")))
        elif op in ("move", "copy"):
            source = _pointer(str(operation.get("from", "")))
            value = _remove(doc, source) if op == "move" else copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif op == "test":
            if _get(doc, path) != operation.get("value"):
                raise errors.ApiStatusError(
                    422, "Invalid", f"testing value /{'/'.join(path)} failed: test failed"
                )
        else:
            raise errors.bad_request(f"Unexpected kind: {op}")
    return doc


# -- strategic merge patch ---------------------------------------------------------------------


def _field_schema(schema: Schema | None, key: str) -> Schema | None:
    schema = schemas.resolve(schema)
    if schema is None:
        return None
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key]  # type: ignore[no-any-return]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _strategy(schema: Schema | None) -> tuple[list[str], str | None]:
    if schema is None:
        return [], None
    strategy = str(schema.get("x-kubernetes-patch-strategy", ""))
    return strategy.split(",") if strategy else [], schema.get("x-kubernetes-patch-merge-key")


def _merge_list(
    original: list[Any], patch: list[Any], key: str | None, item: Schema | None
) -> list[Any]:
    if any(isinstance(p, dict) and p.get("$patch") == "replace" for p in patch):
        return [p for p in patch if not (isinstance(p, dict) and "$patch" in p)]
    if key is None or not all(isinstance(p, dict) for p in patch):
        # A list of scalars with the merge strategy (finalizers, say) is a set union.
        merged = list(original)
        merged.extend(p for p in patch if p not in merged)
        return merged
    merged = [copy.deepcopy(o) for o in original]
    for element in patch:
        where = next(
            (
                i
                for i, o in enumerate(merged)
                if isinstance(o, dict) and o.get(key) == element.get(key)
            ),
            None,
        )
        if element.get("$patch") == "delete":
            if where is not None:
                merged.pop(where)
        elif where is None:
            merged.append(strategic_merge({}, element, item))
        else:
            merged[where] = strategic_merge(merged[where], element, item)
    return merged


def strategic_merge(original: Any, patch: Any, schema: Schema | None) -> Any:
    """Merge ``patch`` into ``original`` the way the apiserver's strategic merge does."""
    if not isinstance(patch, dict) or not isinstance(original, dict):
        return _strip_directives(copy.deepcopy(patch))
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip_directives({k: v for k, v in patch.items() if k != "$patch"})
    if directive == "delete":
        return _DELETE
    result = dict(original)
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if key.startswith("$"):
            continue  # $setElementOrder, $retainKeys: handled below or only about order
        field_schema = _field_schema(schema, key)
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = strategic_merge(result[key], value, field_schema)
            if merged is _DELETE:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list) and isinstance(result.get(key), list):
            strategy, merge_key = _strategy(field_schema)
            if "merge" in strategy:
                items = (field_schema or {}).get("items")
                result[key] = _merge_list(result[key], value, merge_key, items)
            else:
                result[key] = _strip_directives(copy.deepcopy(value))
        else:
            result[key] = _strip_directives(copy.deepcopy(value))
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def apply(content_type: str, api_version: str, kind: str, current: Any, patch: Any) -> Any:
    if content_type == MERGE:
        return merge_patch(current, patch)
    if content_type == JSON_PATCH:
        return json_patch(current, patch)
    if content_type in (STRATEGIC, APPLY):
        if not isinstance(patch, dict):
            raise errors.bad_request("strategic merge patch must be a JSON object")
        return strategic_merge(current, patch, schemas.root_schema(api_version, kind))
    raise errors.unsupported_media_type(content_type)
