"""hf_medtl: transfer learning for medical image classification on the Hugging Face stack."""

__version__ = "0.1.0"


def load_model(model_dir, allow_pickle_weights: bool = False, trust_remote_code: bool = False):
    """(model in eval mode, image processor, class names) of any model hf_medtl saved (re-exported lazily from
    hf_medtl.models.load_saved_model, so that ``import hf_medtl`` stays light)."""
    from hf_medtl.models import load_saved_model

    return load_saved_model(model_dir, allow_pickle_weights, trust_remote_code)


# `hf_medtl.predict(model_dir, inputs, ...)`: the function of hf_medtl.inference.predict. Light: that module imports
# torch only when called.
from hf_medtl.inference.predict import predict  # noqa: E402

__all__ = ["load_model", "predict"]
