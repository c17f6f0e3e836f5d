"""Logging for workflow jobs: everything a job prints goes to its ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def log_to(path: str | Path) -> Iterator[logging.Logger]:
    """Send stdout, stderr (tqdm progress included) and ``logging`` to ``path`` for the job."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        logging.basicConfig(
            stream=handle, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
        )
        logger = logging.getLogger("fedumm")
        try:
            yield logger
        except BaseException:
            logger.exception("job failed")
            raise
