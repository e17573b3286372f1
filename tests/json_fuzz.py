"""Random JSON for the tests that feed parsers values of the wrong shape anywhere."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Small values, for objects whose every field is replaced in turn (DRA objects).
any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=4,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``value`` (dict keys, list indexes)."""
    out = [path] if path else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def replace_a_field(
    obj: dict[str, Any], data: st.DataObject, values: st.SearchStrategy[Any] = any_json
) -> None:
    """Replace one value anywhere inside ``obj`` (drawn from ``data``) by one of ``values``."""
    path = data.draw(st.sampled_from(_paths(obj)))
    target: Any = obj
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = data.draw(values)


# Any JSON a client could send: huge integers, floats with inf and NaN, nesting.
wide_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
