"""A conductor-loop run's ``run-info.yaml``, parsed: bytes in, the fields metrics use out.

Rule: no I/O and no clock here; times are Unix seconds from the file's own values.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.conductor.values import (
    PROJECT_KEYS,
    TASK_KEYS,
    YAML_ERRORS,
    as_integer,
    as_timestamp,
    first_field,
    load_yaml,
)

__all__ = ["RunInfo", "parse_run_info"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The fields of a run's ``run-info.yaml`` that metrics use; times are Unix seconds."""

    run_id: str = ""
    project: str = ""
    task: str = ""
    agent: str = ""
    status: str = ""
    start_time: float | None = None
    end_time: float | None = None
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    @property
    def duration_s(self) -> float | None:
        if self.start_time is None or self.end_time is None or self.end_time < self.start_time:
            return None
        return self.end_time - self.start_time


def parse_run_info(data: bytes) -> RunInfo | None:
    """The ``run-info.yaml`` of a run; None when it is not a YAML mapping.

    ``agent_type`` is read where ``agent`` is missing; Go's zero time
    (``0001-01-01T00:00:00Z``, a run not finished) reads as no time.
    """
    try:
        doc = load_yaml(data.decode("utf-8", "replace"))
    except YAML_ERRORS:
        return None
    if not isinstance(doc, dict):
        return None
    return RunInfo(
        run_id=first_field(doc, ("run_id",)),
        project=first_field(doc, PROJECT_KEYS),
        task=first_field(doc, TASK_KEYS),
        agent=first_field(doc, ("agent", "agent_type")),
        status=first_field(doc, ("status",)).lower(),
        start_time=as_timestamp(doc.get("start_time")),
        end_time=as_timestamp(doc.get("end_time")),
        exit_code=as_integer(doc.get("exit_code")),
    )
