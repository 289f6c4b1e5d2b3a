"""hf_medtl: transfer learning for medical image classification on the Hugging Face stack."""

__version__ = "0.1.0"
