"""How an episode (an edit) ends. The env stores these as integers in a tensor; this enum names them."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Outcome"]


class Outcome(IntEnum):
    RUNNING = 0  # not finished yet
    SUCCESS = 1  # within the env's success tolerance of the target with identity kept
    IDENTITY_LOST = 2  # identity similarity fell below the hard bound
    TIMEOUT = 3  # max_steps reached without either

    @property
    def label(self) -> str:
        """The name written into CSV files and captions: ``success``, ``identity_lost``, ..."""
        return self.name.lower()
