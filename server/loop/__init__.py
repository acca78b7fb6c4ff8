"""``tally loop -- CMD``: a Ralph loop instrumented from the outside.

The loop runs the agent once per iteration and writes the Ralph-loop events around
each run, to the local bus or to a remote tally through an on-disk spool.

Only the options are re-exported here: every ``tally`` command builds the parser
that holds them, and importing the loop itself (psutil, http.client, the XML parser)
would slow every command's start. ``tally loop`` imports ``server.loop.command``.
"""

from server.loop.options import LoopOptions as LoopOptions
from server.loop.options import LoopUsageError as LoopUsageError
from server.loop.options import add_loop_arguments as add_loop_arguments
from server.loop.options import loop_options as loop_options
