"""What a node holds, for the rules: a plain value, text, or a mapping's values by key.

Nothing is ever constructed from a tag: a scalar's value is built by PyYAML's safe constructor
for the standard tags only, and any other tag on a value, mapping or list is reported. A node
that holds no usable value is reported and read as ``INVALID`` (distinct from a YAML null).
"""

from __future__ import annotations

from typing import Any, Final

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ._report import Reporter, close_match
from ._yaml import BOOL_TAG, INT_TAG, MAP_TAG, NULL_TAG, PLAIN, STR_TAG, tag_of

__all__ = [
    "INVALID",
    "check_tag",
    "describe",
    "is_null",
    "mapping",
    "scalar",
    "string",
]


class _Invalid:
    """Marks a value that failed validation (distinct from a YAML null)."""


INVALID: Final = _Invalid()

_constructor = SafeConstructor()


def scalar(node: Node, report: Reporter) -> Any:
    """The node's plain value (str, int, float, bool, None, ...), or INVALID if it has none."""
    if not isinstance(node, ScalarNode):
        report.on(node, f"expected a single value, got {describe(node)}")
        return INVALID
    tag = tag_of(node)
    if tag == STR_TAG:
        return node.value
    value = node.value
    if (
        tag == INT_TAG
        and len(value) < 19
        and value.isdigit()
        and value.isascii()
        and value[0] != "0"
    ):
        return int(value)  # a short decimal: what the constructor would give, sooner
    construct = _constructor.yaml_constructors.get(tag)
    if construct is None:
        report.on(node, f"unsupported YAML tag {report.quote(tag)}", "remove the '!' tag")
        return INVALID
    try:
        return construct(_constructor, node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        report.on(node, f"cannot read value {report.cut(node.value)!r}: {report.quote(str(exc))}")
        return INVALID


def string(node: Node, what: str, report: Reporter, *, hint: str | None = None) -> str | None:
    """The node's text, or ``None`` (reported) when it holds anything else."""
    value = scalar(node, report)
    if value is INVALID:
        return None
    if not isinstance(value, str):
        report.on(node, f"{what} must be text, got {describe(node)}", hint)
        return None
    return value


def check_tag(node: Node, plain: str, report: Reporter) -> None:
    """Report an explicit tag on a mapping or list (``!!python/object:...``, ``!!set``)."""
    if node.tag != plain:
        report.on(node, f"unsupported YAML tag {report.quote(node.tag)}", "remove the '!' tag")


def mapping(
    node: MappingNode, allowed: tuple[str, ...], where: str, report: Reporter
) -> dict[str, Node]:
    """The mapping's values by key; unknown, duplicate and non-string keys are reported."""
    check_tag(node, MAP_TAG, report)
    found: dict[str, Node] = {}
    for key_node, value_node in node.value:
        if not (
            isinstance(key_node, ScalarNode)
            and key_node.tag in (PLAIN, STR_TAG)  # not '!!python/name:x url'
            and (key_node.value in allowed or tag_of(key_node) == STR_TAG)
        ):
            report.on(key_node, f"keys must be plain names {where}")
            continue
        key = key_node.value
        if key in found:
            report.on(key_node, f"duplicate key '{report.quote(key)}' {where}")
            continue
        if key not in allowed:
            close = close_match(key, allowed)
            hint = f"did you mean '{close}'?" if close else f"known keys: {', '.join(allowed)}"
            report.on(key_node, f"unknown key '{report.quote(key)}' {where}", hint)
            continue
        found[key] = value_node
    return found


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and tag_of(node) == NULL_TAG


def describe(node: Node) -> str:
    """A short description of a node's value for messages: its text, or its kind."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = tag_of(node)
    if tag == NULL_TAG:
        return "nothing"
    kinds = {BOOL_TAG: "true/false ", STR_TAG: "text "}
    text = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"{kinds.get(tag, '')}{text!r}"
