"""hf_medtl: transfer learning for medical image classification on the Hugging Face stack."""

__version__ = "0.1.0"
__all__ = ["load_model", "predict"]


def load_model(model_dir, allow_pickle_weights: bool = False, trust_remote_code: bool = False):
    """(model in eval mode, image processor, class names) of any model hf_medtl saved (re-exported lazily from
    hf_medtl.models.load_saved_model, so that ``import hf_medtl`` stays light)."""
    from hf_medtl.models import load_saved_model

    return load_saved_model(model_dir, allow_pickle_weights, trust_remote_code)


def __getattr__(name: str):
    # `hf_medtl.predict(model_dir, inputs, ...)`: hf_medtl.inference.predict's function, imported on first use so that
    # `import hf_medtl` (and `hf-medtl --help`) stays light.
    if name == "predict":
        from hf_medtl.inference.predict import predict

        return predict
    raise AttributeError(f"module 'hf_medtl' has no attribute '{name}'")
