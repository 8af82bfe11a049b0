"""Fault injection for tests and for trying the failure paths by hand: a callback that sends this process a
signal at a chosen env step, as ``timeout``, Ctrl-C or a SLURM pre-emption would.

    agelatent-train +callbacks.fault='{_target_: agelatent.testing.faults.SignalAt, env_steps: 2000}'
"""

from __future__ import annotations

import os
import signal

import lightning as L

__all__ = ["SignalAt"]


class SignalAt(L.Callback):
    """Send ``signum`` (default SIGTERM) to this process once, at the end of the first batched step that
    reaches ``env_steps`` env steps."""

    def __init__(self, env_steps: int, signum: int = int(signal.SIGTERM)) -> None:
        self.env_steps, self.signum, self.sent = int(env_steps), int(signum), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and pl_module.env_steps >= self.env_steps:
            self.sent = True
            os.kill(os.getpid(), self.signum)
