"""The catalogue under one configuration: every family by name, and the names it reserves.

Rule: built from the declarations of this package and the configuration only
(the loop prefix and iteration buckets); it declares nothing itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from projections.catalogue.conductor import CONDUCTOR
from projections.catalogue.loops import loop_specs
from projections.catalogue.self_metrics import SELF, SERVER
from projections.catalogue.spec import FamilySpec

if TYPE_CHECKING:  # config imports this package's bucket defaults
    from projections.config import ProjectionConfig

__all__ = ["RESERVED_PREFIXES", "Catalogue"]

#: Prefixes of the catalogue's own families; ``P_`` (the loop prefix) is added per config.
RESERVED_PREFIXES: Final = ("conductor_", "tally_")


class Catalogue:
    """Every catalogue family for one configuration, and the names ``metric`` events may not use.

    ``by_name`` holds the families a projection folds (conductor, loop, ``SELF``);
    ``server`` those a running server adds.
    """

    __slots__ = (
        "by_name",
        "conductor",
        "loop",
        "loop_prefix",
        "reserved",
        "self_metrics",
        "server",
    )

    def __init__(self, config: ProjectionConfig) -> None:
        self.loop_prefix = config.loop_prefix
        self.conductor: dict[str, FamilySpec] = {s.name: s for s in CONDUCTOR}
        self.loop: dict[str, FamilySpec] = loop_specs(config.loop_prefix, config.iteration_buckets)
        self.self_metrics: dict[str, FamilySpec] = {s.name: s for s in SELF}
        self.by_name: dict[str, FamilySpec] = {
            **self.conductor,
            **{s.name: s for s in self.loop.values()},
            **self.self_metrics,
        }
        self.server: dict[str, FamilySpec] = {s.name: s for s in SERVER}
        self.reserved: tuple[str, ...] = (*RESERVED_PREFIXES, f"{config.loop_prefix}_")

    def is_reserved(self, name: str) -> bool:
        """Whether ``name`` belongs to the catalogue, so ``metric`` events may not use it."""
        return name.startswith(self.reserved) or name in self.by_name
