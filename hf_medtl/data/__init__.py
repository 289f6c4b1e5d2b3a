"""The data stage: the recipe's data arguments in; checked, leakage-guarded train/validation/test splits out."""
from hf_medtl.data.data_report import summary_line
from hf_medtl.data.dataset import image_dataset, to_datasets
from hf_medtl.data.load import load_splits
from hf_medtl.data.manifest import EXCLUDED, MANIFEST, Splits, read_manifest
from hf_medtl.data.types import DataError, Sample
from hf_medtl.data.transforms import Preprocessing, build_transforms, preprocessing_from_processor

__all__ = ["DataError", "EXCLUDED", "MANIFEST", "Preprocessing", "Sample", "Splits", "build_transforms",
           "image_dataset", "load_splits", "preprocessing_from_processor", "read_manifest", "summary_line",
           "to_datasets"]
