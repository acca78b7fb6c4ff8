"""The metric model: families of series (counter, gauge, histogram, summary), their records.

Rule: no I/O and no wall clock; a family changes only through its own methods,
and ``state`` turns any family into plain records and back, exactly.
"""

from projections.metrics.families import OVERFLOW as OVERFLOW
from projections.metrics.families import CounterFamily as CounterFamily
from projections.metrics.families import GaugeFamily as GaugeFamily
from projections.metrics.families import HistogramFamily as HistogramFamily
from projections.metrics.families import HistogramSeries as HistogramSeries
from projections.metrics.families import Labels as Labels
from projections.metrics.families import MetricNameError as MetricNameError
from projections.metrics.state import FamilyState as FamilyState
from projections.metrics.state import family_from_state as family_from_state
from projections.metrics.state import family_to_state as family_to_state
from projections.metrics.summary import QUANTILES as QUANTILES
from projections.metrics.summary import AnyFamily as AnyFamily
from projections.metrics.summary import SummaryFamily as SummaryFamily
from projections.metrics.summary import SummarySeries as SummarySeries
