"""Read an offline W&B run (``wandb/offline-run-*/run-*.wandb``) without syncing it: for tests and audits.

The ``.wandb`` file is a LevelDB-style record log (a 7-byte file header ``:W&B`` + magic + version, then
32 KiB blocks of chunks: CRC32 (4 bytes), length (2, little endian), type (1: full, 2: first, 3: middle,
4: last)), each record a ``wandb_internal_pb2.Record`` protobuf. ``wandb sync`` uploads the same file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["OfflineRun", "read_offline_run", "records"]

_BLOCK = 32768
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator:
    """Yield the protobuf records of a ``.wandb`` file in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B run file (expected the ':W&B' header)")
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:  # zero padding up to the block end
            pos += left
            continue
        pending += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class OfflineRun:
    run_id: str = ""
    name: str = ""
    group: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    exit_code: int | None = None


def read_offline_run(run_dir: str | Path, *, wait_for_exit_s: float = 0.0) -> OfflineRun:
    """Parse ``run_dir`` (an ``offline-run-*`` directory, or a ``.wandb`` file) into config/history/summary.

    ``wait_for_exit_s``: re-read for up to this long until the exit record is there. wandb's service
    process appends the last records after ``wandb.finish`` returns; on a loaded machine that can take a
    moment (seen on 2 shared cores)."""
    import time

    deadline = time.monotonic() + wait_for_exit_s
    while True:
        run = _read(Path(run_dir))
        if run.exit_code is not None or time.monotonic() >= deadline:
            return run
        time.sleep(0.2)


def _read(run_dir: Path) -> OfflineRun:
    files = [run_dir] if run_dir.suffix == ".wandb" else sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb file in {run_dir}")
    run = OfflineRun()
    for record in records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.name, run.group, run.tags = r.run_id, r.display_name, r.run_group, list(r.tags)
            run.config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "config":
            run.config.update({_key(i): json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            run.summary.update({_key(i): json.loads(i.value_json) for i in record.summary.update if _key(i)})
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run
