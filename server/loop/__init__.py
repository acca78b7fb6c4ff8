"""``tally loop -- CMD``: a Ralph loop instrumented from the outside.

The loop runs the agent once per iteration and writes the Ralph-loop events around
each run, to the local bus or to a remote tally through an on-disk spool.
"""

from server.loop.command import run_loop as run_loop
from server.loop.options import LoopOptions as LoopOptions
from server.loop.options import LoopUsageError as LoopUsageError
from server.loop.options import add_loop_arguments as add_loop_arguments
from server.loop.options import loop_options as loop_options
from server.loop.runner import LoopRunner as LoopRunner
from server.loop.runner import StopReason as StopReason
