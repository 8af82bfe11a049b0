"""Fault injection for tests and for trying the failure paths by hand: a callback that sends this process a
signal at a chosen env step, as ``timeout``, Ctrl-C or a SLURM pre-emption would, and one that holds
training at a chosen env step until a signal comes from outside (a pre-emption, ``scancel --signal``).

    agelatent-train +callbacks.fault='{_target_: agelatent.testing.faults.SignalAt, env_steps: 2000}'
    agelatent-train +callbacks.hold='{_target_: agelatent.testing.faults.HoldAt, env_steps: 24}'
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L

from agelatent.agent.callbacks import AtomicCheckpoint

__all__ = ["HoldAt", "SignalAt"]


class SignalAt(L.Callback):
    """Send ``signum`` (default SIGTERM) to this process once, at the end of the first batched step that
    reaches ``env_steps`` env steps."""

    def __init__(self, env_steps: int, signum: int = int(signal.SIGTERM)) -> None:
        self.env_steps, self.signum, self.sent = int(env_steps), int(signum), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.sent and pl_module.env_steps >= self.env_steps:
            self.sent = True
            os.kill(os.getpid(), self.signum)


class HoldAt(L.Callback):
    """Hold training at the end of the first batched step that reaches ``env_steps`` env steps until this
    process catches a stop signal (:class:`~agelatent.agent.callbacks.AtomicCheckpoint`'s), so that a signal
    sent from outside -- a pre-emption, ``scancel --signal`` -- stops the run at a known step whatever the
    machine's speed. On holding it writes ``<run dir>/HELD.txt`` (the env step), which tells the sender
    when; a run that finds that file (a resumed one) does not hold again. Gives up with an error after
    ``max_hold_s`` seconds without a signal."""

    MARKER = "HELD.txt"

    def __init__(self, env_steps: int, max_hold_s: float = 600) -> None:
        self.env_steps, self.max_hold_s, self.done = int(env_steps), float(max_hold_s), False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.done or pl_module.env_steps < self.env_steps:
            return
        self.done = True
        marker = Path(trainer.default_root_dir) / self.MARKER
        if marker.exists():
            return
        stopper = next(c for c in trainer.callbacks if isinstance(c, AtomicCheckpoint))
        marker.write_text(f"{pl_module.env_steps}\n")
        deadline = time.monotonic() + self.max_hold_s
        while stopper.signalled is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"HoldAt: no stop signal within {self.max_hold_s:.0f} s")
            time.sleep(0.05)
