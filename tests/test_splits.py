"""parse_split selects exactly the examples TFDS selects, in TFDS's order, for any spec and split sizes.

The reference is TFDS's own split machinery (`tensorflow_datasets.core.splits`, pure Python, no
TensorFlow): the file instructions (file, skip, take) it builds for `as_dataset(split=spec)`, turned into
the list of (split, example index) read. Error cases: TFDS refuses a spec iff we refuse it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlds_loader.errors import ConfigError, DatasetNotFoundError
from rlds_loader.tfds.dataset_info import shard_filenames
from rlds_loader.tfds.splits import num_examples, parse_split

tfds_splits = pytest.importorskip("tensorflow_datasets.core.splits")


def tfds_selection(spec: str, shard_lengths: dict[str, list[int]]) -> list[tuple[str, int]]:
    """(split, example index) of every example TFDS reads for `spec`, in order."""
    from etils import epath
    from tensorflow_datasets.core import naming

    infos, where = [], {}
    for name, lengths in shard_lengths.items():
        template = naming.ShardedFileTemplate(data_dir=epath.Path("/d"), dataset_name="ds", split=name,
                                              filetype_suffix="tfrecord")
        infos.append(tfds_splits.SplitInfo(name=name, shard_lengths=list(lengths), num_bytes=0,
                                           filename_template=template))
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        for i, fname in enumerate(shard_filenames("ds", name, "tfrecord", len(lengths))):
            where[f"/d/{fname}"] = (name, starts[i], lengths[i])
    out = []
    for fi in tfds_splits._make_file_instructions(infos, spec):
        name, start, length = where[fi.filename]
        take = length - fi.skip if fi.take == -1 else fi.take
        out += [(name, start + fi.skip + k) for k in range(take)]
    return out


def our_selection(spec: str, shard_lengths: dict[str, list[int]]) -> list[tuple[str, int]]:
    sizes = {name: sum(lengths) for name, lengths in shard_lengths.items()}
    ranges = parse_split(spec, sizes, shard_lengths)
    for name, start, stop in ranges:
        assert 0 <= start <= stop <= sizes[name]
    return [(name, i) for name, start, stop in ranges for i in range(start, stop)]


def _reversed(part: str, shard_lengths: dict[str, list[int]]) -> bool:
    """Whether TFDS resolves this part to a slice whose start is past its stop."""
    infos = {name: tfds_splits.SplitInfo(name=name, shard_lengths=list(lengths), num_bytes=0)
             for name, lengths in shard_lengths.items()}
    absolute = tfds_splits.ReadInstruction.from_spec(part).to_absolute(infos)
    return any(a.from_ is not None and a.to is not None and a.from_ > a.to for a in absolute)


def assert_same(spec: str, shard_lengths: dict[str, list[int]]) -> Exception | None:
    """Our selection equals TFDS's, or both refuse the spec (then TFDS's exception is returned).

    One deliberate difference: a reversed slice (start past stop, e.g. 'train[20:10]') selects nothing
    here, like a Python slice. TFDS turns it into a negative `take` that tf.data reads as "to the end of
    the shard" when both bounds fall in one shard, and into nothing otherwise.
    """
    try:
        expected = tfds_selection(spec, shard_lengths)
    except (ValueError, NotImplementedError) as e:
        with pytest.raises((ConfigError, DatasetNotFoundError)):
            our_selection(spec, shard_lengths)
        return e
    ours = our_selection(spec, shard_lengths)
    parts = [p.strip() for p in spec.split("+")]
    if len(parts) > 1:
        for part in parts:
            assert_same(part, shard_lengths)
        assert ours == [x for part in parts for x in our_selection(part, shard_lengths)], spec
    elif _reversed(spec, shard_lengths):
        assert ours == [], spec
    else:
        assert ours == expected, spec
    return None


SHARDS = {"train": [30, 25, 45], "validation": [7, 0, 6], "test": [1], "dev-2": [3, 3]}


@pytest.mark.parametrize("spec", [
    "train", "validation", "test", "dev-2", "all",
    "train[:95%]", "train[95%:]", "train[10:20]", "train[-5%:]", "train[:-10]", "train[-10:-3]",
    "train+validation", "train[:50%]+test[:]", "train[:50%]+validation[10:]", "train + test",
    "train[33%:66%]", "train[:33.3%]", "train[12.5%:87.5%]", "validation[:50%]", "validation[49.9%:]",
    "train[1shard]", "train[:2shard]", "train[-1shard:]", "train[1shard:-1shard]", "train[:0shard]",
    "validation[1shard]", "validation[1shard:2shard]", "train[10%:20]", "train[10:20%]",
    "train[0:0]", "train[20:10]", "train[40:35]", "train[:100%]", "train[-100%:]", "train[:1_0]", "test[0:1]",
    "train[:-0%]", "train[-0:]", "all+train[:1]",
])
def test_specs_match_tfds(spec):
    assert_same(spec, SHARDS)


@pytest.mark.parametrize("spec", [
    "train[:101%]", "train[101:]", "train[:-101]", "train[5]", "train[5%]", "train[:5:6]", "train[]",
    "train[1.5:]", "all[:10%]", "train[abc:]", "train[:]", "nope", "train+nope[:5]", "train[x%:]",
])
def test_invalid_specs_rejected_like_tfds(spec):
    assert isinstance(assert_same(spec, SHARDS), ValueError | NotImplementedError), spec


def test_unknown_split_lists_splits():
    with pytest.raises(DatasetNotFoundError) as e:
        parse_split("trian[:10%]", {"train": 10, "test": 3})
    assert "'trian'" in str(e.value) and "train, test" in str(e.value)


def test_examples():
    sizes = {"train": 1000, "test": 50}
    assert parse_split("train[:95%]+test[10:]", sizes) == [("train", 0, 950), ("test", 10, 50)]
    assert parse_split("all", sizes) == [("train", 0, 1000), ("test", 0, 50)]
    assert parse_split("train[-5%:]", sizes) == [("train", 950, 1000)]
    assert num_examples(parse_split("test[:-10]+test[20:10]", sizes)) == 40
    with pytest.raises(ConfigError, match="shard"):
        parse_split("train[1shard]", sizes)  # shard units need the shard lengths


def test_reversed_slice_is_empty():
    assert parse_split("a[20:10]", {"a": 40}) == [("a", 20, 20)]
    assert parse_split("a[38:13%]", {"a": 4}) == [("a", 2, 2)]


def test_percent_rounding_is_round_half_even():
    # 50% of 5 = 2.5 -> 2 (Python's round), 50% of 7 = 3.5 -> 4
    assert parse_split("a[:50%]", {"a": 5}) == [("a", 0, 2)]
    assert parse_split("a[:50%]", {"a": 7}) == [("a", 0, 4)]


_names = st.sampled_from(["train", "train", "val", "test", "other"])


@st.composite
def bounds(draw) -> str:
    kind = draw(st.sampled_from(["none", "abs", "pct", "pct_float", "shard"]))
    if kind == "none":
        return ""
    if kind == "abs":
        return str(draw(st.integers(-60, 60)))
    if kind == "pct":
        return f"{draw(st.integers(-101, 101))}%"
    if kind == "pct_float":
        return f"{draw(st.integers(-1005, 1005)) / 10:g}%"
    return f"{draw(st.integers(-5, 5))}shard"


@st.composite
def sub_specs(draw) -> str:
    name = draw(_names)
    form = draw(st.sampled_from(["plain", "slice", "slice", "slice", "one"]))
    if form == "plain":
        return name
    if form == "one":
        return f"{name}[{draw(bounds())}]"
    return f"{name}[{draw(bounds())}:{draw(bounds())}]"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lengths=st.fixed_dictionaries({
        "train": st.lists(st.integers(0, 40), min_size=1, max_size=5),
        "val": st.lists(st.integers(0, 9), min_size=1, max_size=3),
        "test": st.lists(st.integers(0, 3), min_size=1, max_size=4),
    }),
    parts=st.lists(sub_specs(), min_size=1, max_size=3),
)
def test_random_specs_match_tfds(lengths, parts):
    assert_same("+".join(parts), lengths)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 2000), lo=st.integers(-100, 100), hi=st.integers(-100, 100),
       tenths=st.booleans())
def test_percent_boundaries_match_tfds(size, lo, hi, tenths):
    lo_s = f"{lo / 10:g}" if tenths else str(lo)
    hi_s = f"{hi / 10:g}" if tenths else str(hi)
    assert_same(f"train[{lo_s}%:{hi_s}%]", {"train": [size]})
