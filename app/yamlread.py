"""The one YAML reader of text someone else may have written (a config file, a variable).

A document is first composed (nodes, aliases unexpanded) and measured, and constructed only
when it is within bounds: more than :data:`MAX_VALUES` values once aliases are expanded (a
ten-line "billion laughs" expands to a billion), nesting deeper than :data:`MAX_DEPTH`, an
integer longer than :data:`MAX_INT_CHARS` characters, a mapping key that is not a string or a
duplicate key (PyYAML would keep the last one) is a ``yaml.YAMLError`` before any Python object
is made.
"""

from __future__ import annotations

import functools
from typing import Any

import yaml

#: Values of a config with aliases expanded: a hundred models take a few thousand.
MAX_VALUES = 50_000
#: Nesting of a config: a model's input range is 5 levels down.
MAX_DEPTH = 32
#: The longest integer: any valid value has at most 19 digits.
MAX_INT_CHARS = 30
_INT_TAG = "tag:yaml.org,2002:int"


@functools.cache
def _loader() -> type[yaml.SafeLoader]:
    """PyYAML's safe loader that refuses duplicate mapping keys instead of keeping the last."""
    # libyaml's parser when PyYAML has it (about 10x faster than the pure-Python one).
    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class UniqueKeyLoader(base):  # type: ignore[valid-type,misc]
        pass

    def mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node)
            if not isinstance(key, str):  # a list there is unhashable; a number no key of ours
                raise yaml.constructor.ConstructorError(
                    None, None, f"a mapping key must be a string, not a {type(key).__name__} "
                    "(quote it)", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return dict(loader.construct_mapping(node))

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return UniqueKeyLoader


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _measure(root: yaml.Node) -> None:
    """Refuse a composed document whose expansion is too large or too deep, or that holds a
    huge integer (yaml.YAMLError). Iterative, and each node (an alias is the node it names)
    measured once: the cost is the document's size, not its expansion's."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node): (values once expanded, depth)
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
                raise yaml.constructor.ConstructorError(
                    None, None, f"an integer of {len(node.value)} characters (at most "
                    f"{MAX_INT_CHARS})", node.start_mark)
            sizes[id(node)] = (1, 1)
            continue
        if children_done:
            open_nodes.discard(id(node))
            inner = [sizes[id(child)] for child in _children(node)]
            size = 1 + sum(s for s, _ in inner)
            depth = 1 + max((d for _, d in inner), default=0)
            if size > MAX_VALUES:
                raise yaml.constructor.ConstructorError(
                    None, None, f"more than {MAX_VALUES} values once its aliases are expanded",
                    node.start_mark)
            if depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", node.start_mark)
            sizes[id(node)] = (size, depth)
            continue
        if id(node) in open_nodes:
            raise yaml.constructor.ConstructorError(
                None, None, "an alias that contains itself", node.start_mark)
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node))


def load_bounded(text: str) -> object:
    """The YAML document in ``text``, measured (:func:`_measure`) before it is constructed."""
    loader = _loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()
