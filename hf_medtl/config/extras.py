"""Optional packages a recipe asks for, checked when the recipe is read: a tracker named in ``report_to`` that is
not installed would otherwise end the run in a traceback when the Trainer is built, after the data check and the
model load. Only find_spec is used: nothing is imported, so the check costs nothing when the package is there."""
from __future__ import annotations

import importlib.util

# Trackers whose pip extra hf_medtl ships (pyproject.toml [project.optional-dependencies]).
EXTRAS = ("tensorboard", "trackio")

# report_to name -> (modules of which any one will do, what to pip install): the modules transformers' own
# integrations look for (transformers.integrations.integration_utils, is_<name>_available). Which names exist at
# all is the installed transformers' say (INTEGRATION_TO_CALLBACK).
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "trackio": (("trackio",), "trackio"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
    "comet_ml": (("comet_ml",), "comet_ml"),
    "azure_ml": (("azureml",), "azureml-core"),
    "neptune": (("neptune",), "neptune"),
    "codecarbon": (("codecarbon",), "codecarbon"),
    "clearml": (("clearml",), "clearml"),
    "dagshub": (("dagshub",), "dagshub mlflow"),
    "flyte": (("flytekit",), "flytekit flytekitplugins-deck"),
    "dvclive": (("dvclive",), "dvclive"),
    "swanlab": (("swanlab",), "swanlab"),
    "kubeflow": ((), ""),  # not a package: transformers turns it on from KUBEFLOW_TRAINER_SERVER_URL
}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a module set to None in sys.modules cannot)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing; a module without a __spec__
        return False


def pip_command(tracker: str) -> str:
    """How to install a tracker: the extra we ship for it, else its own package."""
    if tracker in EXTRAS:
        return f'pip install -e ".[{tracker}]"'
    return f"pip install {TRACKERS[tracker][1]}"


def report_to_names(report_to) -> list[str]:
    """report_to as TrainingArguments reads it: None, 'none', 'all', one name, or a list of names."""
    if report_to is None:
        return []
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    return [] if names in (["none"], ["all"]) else names  # 'all': whichever are installed, so none can be missing


def check_report_to(report_to) -> None:
    """Raise ValueError naming 'report_to', the tracker and the pip command for the first tracker that is
    unknown to transformers or not installed."""
    names = report_to_names(report_to)
    known = _transformers_trackers() if names else set()
    for name in names:
        if name not in known:
            raise ValueError(f"'report_to' names '{name}', which is not a tracker transformers knows; use one of "
                             f"{', '.join(sorted(known))}, or 'none'")
        modules, _ = TRACKERS.get(name, ((), ""))  # one newer than this table: the Trainer checks it
        if modules and not any(installed(m) for m in modules):
            raise ValueError(f"'report_to' names {name}, which is not installed: {pip_command(name)}, or drop it "
                             "from report_to")


def _transformers_trackers() -> set[str]:
    """The report_to names the installed transformers accepts (a newer one may know more than TRACKERS)."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return set(INTEGRATION_TO_CALLBACK)
