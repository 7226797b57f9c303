"""Where a text encoder's weights come from, for the CLIP and the sentence-transformers loaders alike.

The model-name schemas that pick a folder or a sentence-transformers encoder instead of an OpenCLIP
tag, the error raised when the weights cannot be had here, the Hugging Face cache folder, and a probe
that tells at once whether the hub can be reached (an offline machine must fail at once, not after
huggingface_hub's minute of retries).
"""
import os
import threading
import urllib.error
import urllib.request


LOCAL_DIR = "local-dir:"  # OpenCLIP's schema for a folder with open_clip_config.json and weights
# The schema of a model name that picks a sentence-transformers text encoder instead of OpenCLIP.
SENTENCE_TRANSFORMERS = "sentence-transformers:"


# An offline machine must fail at once, not after huggingface_hub's minute of retries.
HUB_PROBE_TIMEOUT_S = 1.5
HUB_PROBE_URL = None  # None: the huggingface_hub endpoint (HF_ENDPOINT); tests point it elsewhere


class CLIPUnavailableError(RuntimeError):
    """The text encoder's weights cannot be had here (offline, unknown tag or model, missing file)."""


def _hub_cache_dir():
    """huggingface_hub's cache folder, read from the environment now (its constants are frozen at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    hf_home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(hf_home, "hub")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_unreachable_reason(url=None, timeout=None):
    """Why the weights host cannot be reached ("" when it can); answers within ~``timeout`` seconds.

    huggingface_hub retries a failed download for about a minute before giving up; a single HEAD
    request with a short timeout, run in a daemon thread so that a hanging DNS lookup cannot hold
    us either, tells the same thing at once. Any HTTP answer (even an error status) means online.
    """
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if _env_flag(flag):
            return f"{flag} is set"
    url = HUB_PROBE_URL or url or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    timeout = HUB_PROBE_TIMEOUT_S if timeout is None else timeout
    outcome = {}

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            outcome["reason"] = ""
        except urllib.error.HTTPError:
            outcome["reason"] = ""
        except Exception as error:  # DNS failure, refused, reset, TLS, timeout: all mean "not usable"
            outcome["reason"] = f"{url} unreachable: {getattr(error, 'reason', error)}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return outcome.get("reason", f"{url} did not answer within {timeout:g} s")
