"""The live parts of ``tally serve``: the projection worker, checkpoints, group commit, SSE.

Rule: each owns one concern of the running server and is wired in ``server.service``.
"""

from server.live.checkpoint import CheckpointStore as CheckpointStore
from server.live.group_commit import GroupCommitter as GroupCommitter
from server.live.sse import SseHub as SseHub
from server.live.sse import Subscriber as Subscriber
from server.live.worker import ProjectionWorker as ProjectionWorker
