"""Numbers, escaping and cached sample prefixes shared by the text exposition formats.

Rule: pure string functions of their arguments; the only state is a derived
render cache keyed (weakly) by family, never snapshotted and rebuilt on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from itertools import accumulate, compress
from operator import is_not, itemgetter
from typing import Any, Final, Generic, NamedTuple, TypeVar
from weakref import WeakKeyDictionary

from projections.metrics.families import (
    CounterFamily,
    Exemplar,
    GaugeFamily,
    HistogramFamily,
    HistogramSeries,
    Labels,
    _FamilyBase,
)
from projections.metrics.summary import QUANTILES, AnyFamily, SummaryFamily

__all__ = [
    "EXEMPLAR_LABELS_MAX",
    "FamilySamples",
    "escape_help",
    "escape_label_value",
    "exemplar_labels",
    "family_samples",
    "format_canonical",
    "format_float",
    "help_text",
    "render_labels",
]

_SMALL_INTS: Final = 4096
#: ``float(i) -> str(i)``: most counters and bucket counts are small integers.
_INT_TEXT: Final[dict[float, str]] = {float(i): str(i) for i in range(_SMALL_INTS)}
_SPECIAL: Final[dict[str, str]] = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}


def _exponent_form(text: str) -> str:
    """Go's ``d.ddde+XX`` for a Python fixed-notation ``repr`` of ``|v| >= 1e6``."""
    sign = "-" if text[0] == "-" else ""
    digits_int, _, digits_frac = text.lstrip("-").partition(".")
    exponent = len(digits_int) - 1
    digits = (digits_int + digits_frac).rstrip("0")
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e+{exponent:02d}"


def _format_wide(v: float) -> str:
    """``|v| >= 1e6`` or NaN: Python's ``repr`` switches to exponents later than Go."""
    text = repr(v)
    special = _SPECIAL.get(text)
    if special is not None:
        return special
    return text if "e" in text else _exponent_form(text)


def format_float(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'g', -1, 64)``, as Prometheus' text format writes numbers.

    Shortest round-tripping digits; exponent form when the decimal exponent is
    below -4 or at least 6 (``1e+06``, ``1.5e-05``); integral values below 1e6
    have no decimal point (``3``); ``+Inf``, ``-Inf``, ``NaN``. Zero is ``0``
    whatever its sign (Go writes ``-0``): equal floats always give equal text.
    """
    text = _INT_TEXT.get(v)
    if text is not None:
        return text
    if -1e6 < v < 1e6:
        i = int(v)
        # Below 1e6 Python's shortest repr lays out digits and exponents as Go does.
        return str(i) if i == v else repr(v)
    return _format_wide(v)


def format_canonical(v: float) -> str:
    """OpenMetrics canonical number for ``le`` and ``quantile`` label values.

    Go's ``%g`` (as :func:`format_float`) with ``.0`` appended when the text has
    neither a decimal point nor an exponent: ``0.0``, ``1.0``, ``0.95``,
    ``100000.0``, ``1e+06``, ``1e-05``, ``+Inf``.
    """
    text = format_float(v)
    if text[-1].isdigit() and "." not in text and "e" not in text:
        return text + ".0"
    return text


def escape_help(text: str) -> str:
    """HELP text in Prometheus text format 0.0.4: backslash and newline escaped."""
    if "\\" in text or "\n" in text:
        return text.replace("\\", "\\\\").replace("\n", "\\n")
    return text


def help_text(family: AnyFamily) -> str:
    """The family's HELP text, never empty: a family declared without help (a ``metric``
    event gave none) gets a generated one, made at render time and never stored."""
    return family.help or f"{family.name}: from metric events, no help given."


def escape_label_value(text: str) -> str:
    """A label value (and OpenMetrics HELP text): backslash, double quote, newline escaped."""
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


def render_labels(
    names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None
) -> str:
    """``{a="x",b="y"}`` in label-name order, ``extra`` (``le``/``quantile``) last; or ``""``."""
    pairs = [f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{escape_label_value(extra[1])}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


#: OpenMetrics 1.0: an exemplar's label names and values hold at most 128 UTF-8 characters.
EXEMPLAR_LABELS_MAX: Final = 128


def exemplar_labels(label: str, exemplar: Exemplar) -> dict[str, str]:
    """``{label: ident, "offset": "<bus position>"}``: whose observation, and where its event is."""
    return {label: exemplar.ident, "offset": str(exemplar.offset)}


def _exemplar_text(label: str, exemplar: Exemplar) -> str:
    """`` # {run_id="r1",offset="1234"} 4.2 1700000000.5`` after a bucket's count, or ``""``
    when the label set is longer than ``EXEMPLAR_LABELS_MAX`` characters (left out)."""
    labels = exemplar_labels(label, exemplar)
    if sum(len(k) + len(v) for k, v in labels.items()) > EXEMPLAR_LABELS_MAX:
        return ""
    text = (
        f" # {render_labels(tuple(labels), tuple(labels.values()))} {format_float(exemplar.value)}"
    )
    ts = repr(exemplar.ts)
    if "e" in ts or "n" in ts:  # not finite, or no fixed notation: the timestamp is optional
        return text
    return f"{text} {ts}"


def _with_exemplars(texts: list[str], label: str, series: HistogramSeries) -> None:
    for bucket, exemplar in series.exemplars.items():
        texts[bucket] += _exemplar_text(label, exemplar)


# -- derived render cache -----------------------------------------------------------

H = TypeVar("H")
V = TypeVar("V")


def _picker(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """A C-speed ``seq -> tuple(seq[i] for i in positions)``."""
    if len(positions) == 1:
        only = positions[0]
        return lambda seq: (seq[only],)
    if not positions:
        return lambda seq: ()
    return itemgetter(*positions)


class SeriesCache(Generic[H]):
    """Per-series text that depends only on label values, in sorted label order.

    ``heads[i]`` belongs to ``order[i]``. ``keys`` is the family dict's own key
    order at the last sync and ``pick`` reorders its values into ``order``.
    ``memo_values``/``memo_text`` hold the last formatted values of a scalar
    family so unchanged values are not formatted again. Everything here is
    derived from the family and may be dropped at any time.
    """

    __slots__ = ("by_labels", "heads", "keys", "memo_text", "memo_values", "order", "pick")

    def __init__(self) -> None:
        self.by_labels: dict[Labels, H] = {}
        self.order: list[Labels] = []
        self.heads: list[H] = []
        self.keys: list[Labels] = []
        self.pick = _picker([])
        self.memo_values: tuple[float, ...] = ()
        self.memo_text: list[str] = []

    def rows(self, mapping: Mapping[Labels, V], build: Callable[[Labels], H]) -> tuple[V, ...]:
        """``mapping``'s values aligned with ``order`` and ``heads``, resynced if its keys moved."""
        keys = list(mapping)
        if keys != self.keys:  # a series came, went or moved (mostly identity checks)
            self._resync(mapping, keys, build)
        return self.pick(list(mapping.values()))

    def _resync(
        self, mapping: Mapping[Labels, object], keys: list[Labels], build: Callable[[Labels], H]
    ) -> None:
        # Invariant: by_labels has exactly the keys of order.
        known = self.by_labels
        kept = [labels for labels in self.order if labels in mapping]
        if len(kept) < len(self.order):
            self.by_labels = known = {labels: known[labels] for labels in kept}
        fresh = sorted(labels for labels in keys if labels not in known)
        for labels in fresh:
            known[labels] = build(labels)
        order = kept + fresh
        order.sort()  # two sorted runs: timsort merges them in linear time
        position = {labels: i for i, labels in enumerate(keys)}
        self.order = order
        self.heads = [known[labels] for labels in order]
        self.keys = keys
        self.pick = _picker([position[labels] for labels in order])
        self.memo_values = ()
        self.memo_text = []


_Caches = WeakKeyDictionary[_FamilyBase, dict[Hashable, SeriesCache[object]]]
_CACHES: _Caches = WeakKeyDictionary()


def series_cache(family: _FamilyBase, key: Hashable) -> SeriesCache[H]:
    """The render cache of ``family`` for one layout ``key`` (format and sample name)."""
    caches = _CACHES.get(family)
    if caches is None:
        caches = _CACHES[family] = {}
    cache = caches.get(key)
    if cache is None:
        cache = caches[key] = SeriesCache()
    return cache  # type: ignore[return-value]


class FamilySamples(NamedTuple):
    """A family's samples as interleaved ``["\\nname{labels} ", "value", ...]``.

    Series appear in ``order`` (sorted label values), each with ``per_series``
    consecutive samples; ``"".join(parts)`` is the body of the family without
    its final newline (every line starts with ``"\\n"``).
    """

    order: list[Labels]
    parts: list[str]
    per_series: int


def _interleave(heads: Sequence[str], texts: Sequence[str]) -> list[str]:
    parts: list[str] = [""] * (2 * len(texts))
    parts[::2] = heads
    parts[1::2] = texts
    return parts


def scalar_samples(
    family: CounterFamily | GaugeFamily, sample_name: str, key: Hashable
) -> FamilySamples:
    """One ``sample_name{labels} value`` per series of a counter or gauge."""
    cache: SeriesCache[str] = series_cache(family, key)
    names = family.label_names
    prefix = "\n" + sample_name

    def build(labels: Labels) -> str:
        return prefix + render_labels(names, labels) + " "

    current = cache.rows(family.values, build)
    memo = cache.memo_values
    text = cache.memo_text
    # Only values that are new objects since the last render need formatting; when
    # a sample of the first 256 says most changed, format them all without looking.
    n = len(current)
    if n != len(memo) or 4 * sum(map(is_not, current[:256], memo[:256])) > min(n, 256):
        text = list(map(format_float, current))
    else:
        changed = list(compress(range(n), map(is_not, current, memo)))
        if 4 * len(changed) > n:
            text = list(map(format_float, current))
        else:
            for i in changed:
                text[i] = format_float(current[i])
    cache.memo_values = current
    cache.memo_text = text
    return FamilySamples(cache.order, _interleave(cache.heads, text), 1)


def histogram_samples(
    family: HistogramFamily,
    le_text: Callable[[float], str],
    count_first: bool,
    key: Hashable,
    exemplars: bool = False,
) -> FamilySamples:
    """Cumulative ``_bucket{...,le=...}`` samples up to ``+Inf``, then ``_sum`` and ``_count``
    (``_count`` first when ``count_first``); with ``exemplars``, a bucket's count is followed
    by its exemplar (OpenMetrics), if the family has an exemplar label."""
    cache: SeriesCache[tuple[str, ...]] = series_cache(family, key)
    names = family.label_names
    name = "\n" + family.name
    les = [le_text(b) for b in family.bounds] + ["+Inf"]

    def build(labels: Labels) -> tuple[str, ...]:
        plain = render_labels(names, labels) + " "
        buckets = [f"{name}_bucket{render_labels(names, labels, ('le', le))} " for le in les]
        tail = [f"{name}_sum{plain}", f"{name}_count{plain}"]
        return (*buckets, *(tail[::-1] if count_first else tail))

    rows = cache.rows(family.series, build)
    parts: list[str] = []
    label = family.exemplar_label if exemplars else ""
    for heads, series in zip(cache.heads, rows, strict=True):
        texts = list(map(str, accumulate(series.counts)))
        if label and series.exemplars:
            _with_exemplars(texts, label, series)
        if count_first:
            texts += (str(series.count), format_float(series.sum))
        else:
            texts += (format_float(series.sum), str(series.count))
        parts += _interleave(heads, texts)
    return FamilySamples(cache.order, parts, len(les) + 2)


def summary_samples(
    family: SummaryFamily, q_text: Callable[[float], str], count_first: bool, key: Hashable
) -> FamilySamples:
    """``name{...,quantile=...}`` per quantile of :data:`QUANTILES`, then ``_sum`` and ``_count``
    (``_count`` first when ``count_first``)."""
    cache: SeriesCache[tuple[str, ...]] = series_cache(family, key)
    names = family.label_names
    name = "\n" + family.name
    qs = [q_text(q) for q in QUANTILES]

    def build(labels: Labels) -> tuple[str, ...]:
        plain = render_labels(names, labels) + " "
        quantiles = [f"{name}{render_labels(names, labels, ('quantile', q))} " for q in qs]
        tail = [f"{name}_sum{plain}", f"{name}_count{plain}"]
        return (*quantiles, *(tail[::-1] if count_first else tail))

    rows = cache.rows(family.series, build)
    parts: list[str] = []
    for heads, series in zip(cache.heads, rows, strict=True):
        texts = list(map(format_float, family.quantiles(series)))
        if count_first:
            texts += (str(series.count), format_float(series.sum))
        else:
            texts += (format_float(series.sum), str(series.count))
        parts += _interleave(heads, texts)
    return FamilySamples(cache.order, parts, len(qs) + 2)


def family_samples(
    family: AnyFamily, *, openmetrics: bool, exemplars: bool = False
) -> FamilySamples:
    """The samples of any family in Prometheus 0.0.4 or OpenMetrics 1.0 layout; ``exemplars``
    (OpenMetrics only) adds the histogram buckets' exemplars."""
    fmt = "openmetrics" if openmetrics else "prometheus"
    number = format_canonical if openmetrics else format_float
    match family:
        case CounterFamily():
            sample = family.name
            if openmetrics and not sample.endswith("_total"):
                sample += "_total"
            return scalar_samples(family, sample, (fmt, sample))
        case GaugeFamily():
            return scalar_samples(family, family.name, (fmt, family.name))
        case HistogramFamily():
            return histogram_samples(family, number, openmetrics, fmt, openmetrics and exemplars)
        case SummaryFamily():
            return summary_samples(family, number, openmetrics, fmt)
    raise TypeError(f"not a metric family: {family!r}")
