"""Process-wide logging set-up for the launchers: the root logger never configures itself.

Python's module-level ``logging.info()`` / ``logging.warning()`` call ``logging.basicConfig()`` when
the root logger has no handler, which gives the root a stderr handler for the rest of the process.
OpenCLIP logs that way (``logging.info("Loading pretrained ...")`` in ``open_clip.factory``), so
once MODEL.RCL builds its text bank, every line of the host's ``maskrcnn_benchmark`` logger (which
has its own handler and propagates) was printed a second time by that root handler.

``keep_root_unconfigured()`` gives the root logger :class:`LastResortOnly`, a handler that prints
exactly what Python prints when no handler is configured (records of WARNING and above that no
other handler takes, through ``logging.lastResort``), so nothing printed changes, except that a
library's root-level call can no longer install ``basicConfig``'s handler.

``held_back(name)`` keeps a logger's lines back while a launcher sets up and checks its input, so
that bad input stops with one line.
"""

import contextlib
import logging


class LastResortOnly(logging.Handler):
    """Root handler that passes to ``logging.lastResort`` only the records no other handler takes."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def emit(self, record):
        logger = logging.getLogger(record.name) if record.name != "root" else logging.root
        while logger is not logging.root:
            if logger.handlers or not logger.propagate:
                return  # another handler printed it (or it was not meant to reach the root)
            logger = logger.parent
        if logging.lastResort is not None:
            logging.lastResort.handle(record)


def keep_root_unconfigured():
    """Give the root logger a :class:`LastResortOnly` handler unless it has handlers already. Idempotent."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(LastResortOnly())


class _Holder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def held_back(logger_name):
    """Hold what ``logger_name`` (and its children) log inside the block, and print it when the block ends,
    unless it ends with ``SystemExit``: a launcher that stops on bad input then prints its one line alone,
    not the set-up lines (shims, stand-ins, registration) that came before it. Any other exception
    releases the held lines first, since they may explain it."""
    logger = logging.getLogger(logger_name)
    holder = _Holder()
    handlers, propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [holder], False
    stopped = False
    try:
        yield
    except SystemExit:
        stopped = True
        raise
    finally:
        logger.handlers, logger.propagate = handlers, propagate
        if not stopped:
            for record in holder.records:
                logger.handle(record)
