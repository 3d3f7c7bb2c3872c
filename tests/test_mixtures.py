"""The mixture registry and Octo-style weight balancing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlds_loader import mixtures
from rlds_loader.errors import ConfigError


@pytest.fixture(autouse=True)
def empty_registry(monkeypatch):
    monkeypatch.setattr(mixtures, "_REGISTRY", {})


def test_register_get_names():
    assert mixtures.names() == []
    mixtures.register("soup", [("bridge", 1.0), ("fractal", 0.5)])
    mixtures.register("arm", (("a", 2),))
    assert mixtures.names() == ["arm", "soup"]
    assert mixtures.get("soup") == [("bridge", 1.0), ("fractal", 0.5)]
    assert mixtures.get("arm") == [("a", 2.0)]
    got = mixtures.get("soup")
    got.append(("x", 1.0))  # a copy: the registry does not change
    assert mixtures.get("soup") == [("bridge", 1.0), ("fractal", 0.5)]


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="'nope'.*none"):
        mixtures.get("nope")
    mixtures.register("soup", [("bridge", 1.0)])
    with pytest.raises(ConfigError, match=r"'nope'.*\['soup'\]"):
        mixtures.get("nope")


def test_overwrite_rules():
    mixtures.register("soup", [("bridge", 1.0)])
    mixtures.register("soup", [("bridge", 1)])  # the same entries again: fine
    with pytest.raises(ConfigError, match="overwrite=True"):
        mixtures.register("soup", [("bridge", 2.0)])
    mixtures.register("soup", [("bridge", 2.0)], overwrite=True)
    assert mixtures.get("soup") == [("bridge", 2.0)]


@pytest.mark.parametrize("entries,message", [
    ([], "non-empty"),
    ([("a", -1.0)], "'a'.*>= 0"),
    ([("a", float("nan"))], "'a'"),
    ([("a", 0.0)], "positive"),
    ([("a", 1.0), ("a", 2.0)], r"\['a'\]"),
    ([("", 1.0)], "non-empty strings"),
    ([("a",)], "pair"),
    ("a", "non-empty list"),
])
def test_bad_entries(entries, message):
    with pytest.raises(ConfigError, match=message):
        mixtures.register("bad", entries)
    assert "bad" not in mixtures.names()
    with pytest.raises(ConfigError, match="name"):
        mixtures.register("", [("a", 1.0)])


@given(st.lists(st.tuples(st.floats(0, 100), st.integers(0, 10**9)), min_size=1, max_size=8))
def test_balance_is_weight_times_count_normalised(pairs):
    weights = [w for w, _ in pairs]
    counts = [n for _, n in pairs]
    total = sum(w * n for w, n in pairs)
    if total <= 0:
        with pytest.raises(ConfigError):
            mixtures.balance(weights, counts)
        return
    out = mixtures.balance(weights, counts)
    assert len(out) == len(pairs) and abs(sum(out) - 1) < 1e-9
    for p, (w, n) in zip(out, pairs, strict=True):
        assert p == pytest.approx(w * n / total, rel=1e-9, abs=1e-15)


def test_balance_examples_and_errors():
    assert mixtures.balance([1, 1], [100, 300]) == [0.25, 0.75]  # equal weights: every frame equally likely
    assert mixtures.balance([3, 1], [100, 300]) == [0.5, 0.5]
    with pytest.raises(ConfigError, match="2 weights but 1"):
        mixtures.balance([1, 1], [5])
    with pytest.raises(ConfigError, match=">= 0"):
        mixtures.balance([1, -1], [5, 5])
