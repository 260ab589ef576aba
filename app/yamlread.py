"""The one YAML reader of text someone else may have written (a config file, a variable):
composed, measured against the bounds of docs/hardening.md#config-input, then constructed."""

from __future__ import annotations

from typing import Any

import yaml

#: Values of a config with aliases expanded: a hundred models take a few thousand.
MAX_VALUES = 50_000
#: Nesting of a config: a model's input range is 5 levels down.
MAX_DEPTH = 32
#: The longest integer: any valid value has at most 19 digits.
MAX_INT_CHARS = 30
_INT_TAG = "tag:yaml.org,2002:int"


def _refused(message: str, node: yaml.Node) -> yaml.YAMLError:
    # A ConstructorError: the loader reports it as a refused document, not a syntax error.
    return yaml.constructor.ConstructorError(None, None, message, node.start_mark)


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A mapping of string keys, each once (PyYAML would keep a duplicate's last value)."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, str):  # a list there is unhashable; a number no key of ours
            raise _refused(f"a mapping key must be a string, not a {type(key).__name__} "
                           "(quote it)", key_node)
        if key in seen:
            raise _refused(f"duplicate key {key!r}", key_node)
        seen.add(key)
    return dict(loader.construct_mapping(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _measure(root: yaml.Node) -> None:
    """yaml.YAMLError past a bound. Each node (an alias is the node it names) is measured once:
    the cost is the document's size, not its expansion's."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node): (values once expanded, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
                raise _refused(f"an integer of {len(node.value)} characters (at most "
                               f"{MAX_INT_CHARS})", node)
            sizes[id(node)] = (1, 1)
            continue
        if children_done:
            open_nodes.discard(id(node))
            inner = [sizes[id(child)] for child in _children(node)]
            size = 1 + sum(s for s, _ in inner)
            depth = 1 + max((d for _, d in inner), default=0)
            if size > MAX_VALUES:
                raise _refused(f"more than {MAX_VALUES} values once its aliases are expanded", node)
            if depth > MAX_DEPTH:
                raise _refused(f"nested more than {MAX_DEPTH} levels deep", node)
            sizes[id(node)] = (size, depth)
            continue
        if id(node) in open_nodes:
            raise _refused("an alias that contains itself", node)
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def load_bounded(text: str) -> object:
    # libyaml's parser when PyYAML has it (about 10x faster than the pure-Python one).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    # On this loader only, not on PyYAML's class.
    loader.yaml_constructors = {  # type: ignore[misc]
        **loader.yaml_constructors, yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG: _mapping}
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
