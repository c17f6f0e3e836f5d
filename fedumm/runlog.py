"""Logging for workflow jobs: everything a job prints goes to its ``log:`` file."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO


class _LineLog(io.TextIOBase):
    """A log file in which tqdm's carriage-return redraws become lines of their own: a file shows
    every progress update (tqdm's ``mininterval`` keeps them few) instead of one joined line."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle

    def write(self, text: str) -> int:
        self.handle.write(text.replace("\r\n", "\n").replace("\r", "\n").replace("\n\n", "\n"))
        return len(text)

    def flush(self) -> None:
        self.handle.flush()


def job_header(rule: str, wildcards: Mapping[str, str], **details: object) -> str:
    """The first line of a job's log: what the job is (``client_train: exp=fedavg, r=001, k=0, strategy=fedavg``)."""
    return f"{rule}: " + ", ".join(f"{key}={value}" for key, value in [*wildcards.items(), *details.items()])


@contextlib.contextmanager
def log_to(path: str | Path, header: str | None = None) -> Iterator[logging.Logger]:
    """Send stdout, stderr (tqdm progress included, one line per update) and ``logging`` to ``path``
    for the job, after ``header`` (`job_header`) when given."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as handle:
        lines = _LineLog(handle)
        with contextlib.redirect_stdout(lines), contextlib.redirect_stderr(lines):
            logging.basicConfig(
                stream=lines, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
            )
            logger = logging.getLogger("fedumm")
            if header:
                logger.info(header)
            try:
                yield logger
            except BaseException:
                logger.exception("job failed")
                raise
