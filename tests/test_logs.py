"""The root logger stays unconfigured under the launchers, so host lines print once (sgg_plugins.logs).

Each case runs in a fresh interpreter: pytest itself puts handlers on the root logger, which would
hide the behaviour under test.
"""

import subprocess
import sys
import textwrap

# A host logger with its own handler (as SGB's setup_logger makes), then a library logging through
# the root-level functions (as open_clip.factory does), then the host again.
SCENARIO = """
import logging, sys
{setup}
host = logging.getLogger("maskrcnn_benchmark")
host.setLevel(logging.DEBUG)
host.addHandler(logging.StreamHandler(sys.stdout))
host.info("host line before")
logging.info("Loading pretrained ViT-B-32")  # open_clip's way of logging
host.info("host line after")
logging.getLogger("some.library").warning("unhandled library warning")
logging.warning("root-level warning")
"""


def run(setup):
    code = textwrap.dedent(SCENARIO.format(setup=setup))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return result.stdout + result.stderr


def test_root_level_library_call_duplicates_host_lines_without_the_fix():
    output = run("")
    assert output.count("host line after") == 2  # the cause: basicConfig's root handler repeats it


def test_host_lines_print_once_and_unhandled_warnings_still_show():
    output = run("from sgg_plugins.logs import keep_root_unconfigured; keep_root_unconfigured()")
    assert output.count("host line before") == 1 and output.count("host line after") == 1
    assert "Loading pretrained" not in output  # an INFO no handler takes stays silent, as without set-up
    assert output.count("unhandled library warning") == 1 and output.count("root-level warning") == 1


def test_an_application_that_configured_logging_keeps_its_handlers():
    output = run("logging.basicConfig(level=logging.INFO, format='app: %(message)s')\n"
                 "from sgg_plugins.logs import keep_root_unconfigured; keep_root_unconfigured()")
    assert "app: Loading pretrained ViT-B-32" in output  # the root handler the application chose
