"""The OTLP/HTTP receiver: ``decode`` (export requests -> events) and ``receiver`` (the routes)."""

from server.otlp.decode import Decoded as Decoded
from server.otlp.decode import OtlpDecodeError as OtlpDecodeError
from server.otlp.decode import decode_logs as decode_logs
from server.otlp.decode import decode_metrics as decode_metrics
from server.otlp.receiver import OtlpReceiver as OtlpReceiver
