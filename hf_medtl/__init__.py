"""hf_medtl: transfer learning for medical image classification on the Hugging Face stack."""

__version__ = "0.1.0"

# `hf_medtl.predict(model_dir, inputs, ...)`: the function, not the module of the same name (import its other
# names with `from hf_medtl.predict import ...`). Light: hf_medtl.predict imports torch only when called.
from hf_medtl.predict import predict  # noqa: E402

__all__ = ["predict"]
