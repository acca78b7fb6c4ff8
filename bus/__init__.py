"""The durable log: event schema, segmented append-only JSONL files, writers and readers."""

from bus.errors import BusError as BusError
from bus.errors import CorruptLine as CorruptLine
from bus.errors import EventError as EventError
from bus.errors import InvalidEvents as InvalidEvents
from bus.errors import TallyError as TallyError
from bus.events import EVENT_TYPES as EVENT_TYPES
from bus.events import Event as Event
from bus.events import decode_event as decode_event
from bus.events import encode_events as encode_events
from bus.events import event_json_schema as event_json_schema
from bus.events import stamp as stamp
from bus.follower import follow as follow
from bus.quarantine import Quarantine as Quarantine
from bus.quarantine import QuarantineEntry as QuarantineEntry
from bus.reader import Batch as Batch
from bus.reader import BusReader as BusReader
from bus.reader import ReadStats as ReadStats
from bus.segments import Segment as Segment
from bus.segments import bus_dir as bus_dir
from bus.segments import list_segments as list_segments
from bus.segments import segment_name as segment_name
from bus.writer import BusConfig as BusConfig
from bus.writer import BusWriter as BusWriter
from bus.writer import Durability as Durability
