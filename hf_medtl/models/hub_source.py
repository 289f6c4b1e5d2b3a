"""Where a backbone comes from: a Hub id or a local folder. The Hub is asked once, without retries, before any
data is read (check_available); a Hub id in the HF cache loads offline when the Hub cannot be reached (loading);
a model that cannot be had is one line naming what to do (not_found)."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from pathlib import Path

from hf_medtl.models.heads import ModelError

logger = logging.getLogger("hf_medtl")


@contextlib.contextmanager
def loading(name: str):
    """Around every from_pretrained of a backbone: transformers' load report (it lists the head we replace on
    purpose as MISMATCH) and huggingface_hub's "Retrying in 8s" lines (20 for an unreachable Hub) stay off the
    console; and a Hub id in the HF cache loads in offline mode when the Hub cannot be reached. (Only offline
    mode avoids the network: with local_files_only transformers still asks the Hub for optional files, retrying
    each for ~25 s. HF_HUB_OFFLINE is read once at import, so the switch is huggingface_hub's own flag.)"""
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging as hf_logging

    fallback = _is_hub_id(name) and not _offline() and _cached(name) and _from_cache_only(name)
    before, hub_before = hf_logging.get_verbosity(), hub_logging.get_verbosity()
    offline_before = constants.HF_HUB_OFFLINE
    hf_logging.set_verbosity_error()
    hub_logging.set_verbosity_error()
    constants.HF_HUB_OFFLINE = offline_before or fallback
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
        hub_logging.set_verbosity(hub_before)
        constants.HF_HUB_OFFLINE = offline_before


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def not_found(name: str, reason: str, unreachable: bool = False) -> ModelError:
    if (Path(name) / "pytorch_model.bin").is_file() and not list(Path(name).glob("*.safetensors")):
        return ModelError(f"'{name}': only pickle weights (pytorch_model.bin), which can run code when loaded; "
                          "set allow_pickle_weights true (--allow_pickle_weights for commands) if you trust it")
    if Path(name).exists() or name.startswith((".", "/", "~")):
        return ModelError(f"model_name_or_path '{name}': not a checkpoint directory ({reason}); it needs a config.json "
                          "and weights, as written by save_pretrained or `hf-medtl convert`")
    where = ("HF_HUB_OFFLINE=1 is set" if _offline() else f"the Hugging Face Hub cannot be reached ({reason})"
             if unreachable else "the Hugging Face Hub could not be reached")
    return ModelError(f"model_name_or_path '{name}': not found locally and {where}. Download it where the Hub is "
                      f"reachable (`hf download {name} --local-dir DIR`) and set model_name_or_path to DIR (or keep it "
                      "in the HF cache and set HF_HUB_OFFLINE=1), or make an offline backbone with "
                      "`hf-medtl convert efficientnet_lite0 DIR`")


def _is_hub_id(name: str | None) -> bool:
    """A name that can only mean a Hub repository: no such local path, and the shape of a repo id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or Path(name).exists() or name.startswith((".", "/", "~")):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


@functools.lru_cache(maxsize=None)
def _hub_answer(name: str) -> tuple[str, str]:
    """('ok' | 'gated' | 'missing' | 'unreachable', why) of one request for the model's config.json, without
    retries and within HF_HUB_ETAG_TIMEOUT; asked once per process (the pre-flight and the load share it)."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except GatedRepoError:
        return "gated", ""
    except RepositoryNotFoundError:
        return "missing", ""
    except HfHubHTTPError as e:  # the Hub answered (no config.json, an error status): the load's errors say more
        return "ok", str(e).splitlines()[0]
    except Exception as e:  # the HTTP client's connection and timeout errors (their types differ between versions)
        return "unreachable", f"{constants.ENDPOINT}: {str(e).splitlines()[0][:120] or type(e).__name__}"
    return "ok", ""


@functools.lru_cache(maxsize=None)  # said once, not at each of the load's from_pretrained calls
def _from_cache_only(name: str) -> bool:
    answer, why = _hub_answer(name)
    if answer == "unreachable":
        logger.info(f"{name}: the Hugging Face Hub cannot be reached ({why}); loading the copy in the HF cache")
    return answer == "unreachable"


def check_available(model_args) -> None:
    """Fail in one line, within HF_HUB_ETAG_TIMEOUT seconds, when the backbone is a Hub id that is not in the HF
    cache and cannot be had from the Hub (unreachable, no such repo, gated). prepare() calls it before the data
    check, which would otherwise run first, only for the load to spend ~2 minutes on retries. A cached model
    passes without the network (loading); with HF_HUB_OFFLINE=1 an uncached one fails at once; local folders are
    left to load_backbone, whose errors name them without any wait."""
    name = model_args.model_name_or_path
    if not _is_hub_id(name) or _cached(name):
        return
    if _offline():  # nothing to ask: a Hub id that is not in the cache cannot load
        raise ModelError(f"model_name_or_path '{name}': not in the Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
                         "downloading it; unset HF_HUB_OFFLINE, or pass a local checkpoint folder")
    answer, why = _hub_answer(name)
    if answer == "unreachable":
        raise not_found(name, why, unreachable=True)
    if answer == "gated":
        raise ModelError(f"model_name_or_path '{name}': a gated model; accept its terms on huggingface.co/{name} "
                         "and log in (`hf auth login`)")
    if answer == "missing":
        raise ModelError(f"model_name_or_path '{name}': no such model on the Hub (or a private one: log in with "
                         "`hf auth login`), and no local folder of that name")
