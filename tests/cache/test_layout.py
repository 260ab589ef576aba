"""app.cache.layout: the one home of the names under the cache root, whose docstring is the
tree; the modules that use a name take it from there."""

from __future__ import annotations

from app.cache import layout, lock, names, prehash, signing


def test_every_name_is_drawn_in_the_tree():
    named = {value for key, value in vars(layout).items()
             if key.isupper() and isinstance(value, str)}
    assert named >= {".engine-init.lock", ".engine-init.warm.json", "tuf", "candidates"}
    for name in named:
        assert name in layout.__doc__, f"{name} is missing from app.cache.layout's tree"


def test_the_modules_use_the_names_of_the_layout():
    assert (lock.LOCK_NAME, prehash.HINT_NAME, signing.ROBOT_KEY_NAME) == \
        (layout.LOCK_NAME, layout.HINT_NAME, layout.ROBOT_KEY_NAME)
    assert names.COMPANION_SUFFIXES == (layout.SIDECAR_SUFFIX, layout.RECORD_SUFFIX)

