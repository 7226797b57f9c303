"""sgg-plugins: training-time regularizers for scene graph generation codebases.

Importing this package imports no host and no optional dependency. The host integration lives in
``sgg_plugins.hosts`` and is installed explicitly (``sgg_plugins.hosts.sgb.install()``) or by the
launchers in ``tools/``.
"""

__version__ = "0.1.0"
