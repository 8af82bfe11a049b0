"""The launcher of ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml): submitit's SLURM launcher,
after :func:`agelatent.cluster.check_controller`. Hydra finds launchers only in the ``hydra_plugins``
namespace package, hence this module outside ``agelatent``."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class CheckedSlurmLauncher(SlurmLauncher):
    """Submits nothing unless a slurmctld answers; then exactly as submitit's SLURM launcher."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from agelatent.cluster import check_controller

        check_controller()
        return super().launch(job_overrides, initial_job_idx)
