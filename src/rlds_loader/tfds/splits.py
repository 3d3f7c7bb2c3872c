"""TFDS split specs -> absolute example ranges, with TFDS's syntax and rounding. Pure, no I/O.

    parse_split("train[:95%]+test[10:]", {"train": 1000, "test": 50})
        -> [("train", 0, 950), ("test", 10, 50)]

Each range is (split name, start, stop), half-open, in the order the spec lists them; reading them one
after another gives TFDS's example order for `as_dataset(split=spec, shuffle_files=False)`.

The grammar and arithmetic follow `tfds.core.ReadInstruction` (tensorflow_datasets/core/splits.py):
  spec      := sub ("+" sub)*                  whitespace allowed around "+"
  sub       := name | name "[" selector "]"    name: letters, digits, "_" and "-"; "all" = every split
  selector  := bound ":" bound | N "shard"     a bound may be empty; one bound's unit applies to both
  bound     := -?number ("%" | "shard")?       "%": float in [-100, 100]; otherwise an integer
  percent   -> round(p * size / 100) with Python's round (half to even), i.e. TFDS's "closest" rounding
  shard     -> the sum of the shard lengths before that shard; a stop <= 0 counts from the end
  negative  -> counted from the end; |bound| > size is an error; start >= stop selects nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rlds_loader.errors import ConfigError, DatasetNotFoundError

SplitRange = tuple[str, int, int]

_SUB_SPEC_RE = re.compile(r"^(?P<name>[\w-]+)(\[(?P<selector>[\d\w%:.-]+)\])?$")
_BOUND_RE = re.compile(r"^((?P<val>-?[\d_.]+)(?P<unit>%|shard)?)?$")
_PLUS_RE = re.compile(r"\s*\+\s*")


def _bad(spec: str, why: str = "") -> ConfigError:
    extra = f" ({why})" if why else ""
    return ConfigError(f"unrecognized split spec {spec!r}{extra}; expected e.g. 'train', 'train[:95%]', "
                       "'train[10:20]', 'train[-5%:]', 'train[2shard]', 'train+test', 'all'")


def _number(text: str, unit: str, spec: str) -> int | float:
    try:
        return float(text) if unit == "%" else int(text)
    except ValueError:
        raise _bad(spec, f"{text!r} is not a valid {'percentage' if unit == '%' else 'integer'}") from None


def _relative(sub: str) -> list[tuple[str, int | float | None, int | float | None, str]]:
    """One '+'-separated part -> [(split, start, stop, unit)] with unit in {'abs', '%', 'shard'}."""
    m = _SUB_SPEC_RE.match(sub)
    if not m:
        raise _bad(sub)
    name, selector = m.group("name"), m.group("selector")
    if name == "all":
        if selector:
            raise _bad(sub, "the split 'all' cannot be sliced")
        return [("all", None, None, "abs")]
    if selector is None:
        return [(name, None, None, "abs")]
    bounds = [_BOUND_RE.match(b) for b in selector.split(":")]
    if not all(bounds) or not any(b.group(0) for b in bounds if b is not None):
        raise _bad(sub)
    if len(bounds) == 1:  # train[3shard]: exactly one shard
        (b,) = bounds
        unit = b["unit"] or "abs"
        if unit != "shard" or b["val"] is None:
            raise _bad(sub, "a single index is only allowed with the 'shard' unit; use a slice 'a:b'")
        start = _number(b["val"], unit, sub)
        return [(name, start, start + 1, unit)]
    if len(bounds) != 2:
        raise _bad(sub)
    lo, hi = bounds
    unit = lo["unit"] or hi["unit"] or "abs"
    start = None if lo["val"] is None else _number(lo["val"], unit, sub)
    stop = None if hi["val"] is None else _number(hi["val"], unit, sub)
    if unit == "%" and (abs(start or 0) > 100 or abs(stop or 0) > 100):
        raise _bad(sub, "percent bounds must be in [-100, 100]")
    return [(name, start, stop, unit)]


def _absolute(name: str, start, stop, unit: str, size: int, lengths: Sequence[int] | None,
              spec: str) -> SplitRange:
    if unit == "%":
        start = 0 if start is None else int(round(start * size / 100.0))
        stop = size if stop is None else int(round(stop * size / 100.0))
    elif unit == "shard":
        if lengths is None:
            raise ConfigError(f"split spec {spec!r} uses shard units but the shard lengths of {name!r} "
                              "are unknown")
        start = 0 if start is None else sum(lengths[:start])
        if stop is not None and stop <= 0:
            stop = len(lengths) + stop
        stop = size if stop is None else sum(lengths[:stop])
    else:
        start = 0 if start is None else start
        stop = size if stop is None else stop
    if abs(start) > size or abs(stop) > size:
        raise ConfigError(f"split spec {spec!r}: slice [{start}:{stop}] of {name!r} is out of range "
                          f"for its {size} examples")
    if start < 0:
        start += size
    if stop < 0:
        stop += size
    return (name, start, max(start, stop))


def parse_split(spec: str, split_sizes: Mapping[str, int],
                shard_lengths: Mapping[str, Sequence[int]] | None = None) -> list[SplitRange]:
    """A TFDS split spec -> [(split, start, stop)]: the example ranges it selects, in reading order.

    `split_sizes` maps each split to its number of examples, in the dataset's split order (used by
    "all"); `shard_lengths` (split -> examples per shard) is needed only for "shard" units.
    Unknown split: DatasetNotFoundError listing the splits; malformed spec or out-of-range slice:
    ConfigError.
    """
    spec = str(spec)
    parts: list[tuple[str, int | float | None, int | float | None, str]] = []
    for sub in _PLUS_RE.split(spec):
        for name, start, stop, unit in _relative(sub):
            if name == "all":
                parts.extend((n, None, None, "abs") for n in split_sizes)
            else:
                parts.append((name, start, stop, unit))
    out = []
    for name, start, stop, unit in parts:
        if name not in split_sizes:
            raise DatasetNotFoundError(f"unknown split {name!r} in {spec!r}; the splits are: "
                                       f"{', '.join(split_sizes) or '(none)'}")
        lengths = None if shard_lengths is None else shard_lengths.get(name)
        out.append(_absolute(name, start, stop, unit, int(split_sizes[name]), lengths, spec))
    return out


def num_examples(ranges: Sequence[SplitRange]) -> int:
    """How many examples a resolved spec selects."""
    return sum(stop - start for _, start, stop in ranges)
