"""Pure folds from events to metric state, and exposition formats (state -> bytes)."""

from projections.families import CounterFamily as CounterFamily
from projections.families import GaugeFamily as GaugeFamily
from projections.families import HistogramFamily as HistogramFamily
from projections.families import HistogramSeries as HistogramSeries
from projections.families import Labels as Labels
from projections.families import MetricNameError as MetricNameError
from projections.families import validate_bounds as validate_bounds
