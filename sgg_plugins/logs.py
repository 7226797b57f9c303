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
"""

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
