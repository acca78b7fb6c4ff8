"""The OTLP fold: ``otel_metric`` events -> families (``fold``), named by OpenTelemetry's
Prometheus rules (``names``), counted once per cumulative stream (``streams``), with
exponential histograms converted to explicit buckets (``exponential``)."""

from projections.otel.fold import OtelFold as OtelFold
from projections.otel.fold import OtelState as OtelState
from projections.otel.names import metric_name as metric_name
from projections.otel.streams import Streams as Streams
