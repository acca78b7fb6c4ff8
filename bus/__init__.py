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
