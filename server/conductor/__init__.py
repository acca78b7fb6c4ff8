"""The conductor-loop bridge: message buses under a runs root, appended to tally's bus exactly once.

Pure (bytes or values in, values out; no I/O, no clock): ``format`` (message-bus
files), ``values`` (YAML scalars and times), ``runinfo`` (``run-info.yaml``),
``events`` (a message as tally events). I/O: ``files`` (where files are),
``positions`` (the positions file and its lock), ``bridge`` (discover, read,
append, save).
"""

from server.conductor.bridge import DEFAULT_POLL_S as DEFAULT_POLL_S
from server.conductor.bridge import AppendEvents as AppendEvents
from server.conductor.bridge import BlockReport as BlockReport
from server.conductor.bridge import BridgeStats as BridgeStats
from server.conductor.bridge import ConductorBridge as ConductorBridge
from server.conductor.positions import BridgeBusy as BridgeBusy
from server.conductor.positions import positions_path as positions_path
