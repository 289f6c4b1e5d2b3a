"""Metric modules in `evaluate`'s format, loaded from this package so that they work offline."""
from pathlib import Path

MEDICAL_CLASSIFICATION = Path(__file__).parent / "medical_classification"


def load_medical_classification():
    import evaluate

    return evaluate.load(str(MEDICAL_CLASSIFICATION), keep_in_memory=True)
