"""Exposition formats: the families' state in, bytes out (Prometheus, OpenMetrics, JSON, StatsD).

Rule: every renderer is a pure function of the families (sorted by name, then label
values); ``formats`` holds the one table of them, ``negotiate`` picks one for an
``Accept`` header, ``text`` holds the number and escaping helpers the text formats share.
"""

from projections.exposition.formats import FORMATS as FORMATS
from projections.exposition.formats import Exposition as Exposition
from projections.exposition.formats import Format as Format
from projections.exposition.formats import content_type as content_type
from projections.exposition.formats import render as render
from projections.exposition.negotiate import negotiate as negotiate
from projections.exposition.openmetrics import OpenMetricsHistory as OpenMetricsHistory
