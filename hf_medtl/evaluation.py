"""`hf-medtl evaluate`: score a saved model on any data the toolkit reads, without training."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_medtl.data import DataError, build_transforms, image_dataset, preprocessing_from_processor
from hf_medtl.data.sources import read_label_csv, read_medmnist_npz, scan_class_folders


def load_samples(data: str | Path, split: str, model_classes: list[str], file_pattern: str = "**/*"):
    """The samples of ``data``: a folder of class sub-folders, a label CSV, or one split of a MedMNIST .npz."""
    data = Path(data)
    if data.suffix == ".npz":
        parts = read_medmnist_npz(data, model_classes)  # integer labels are the model's ids
        key = {"val": "validation"}.get(split, split)
        if key not in parts:
            raise DataError(f"{data}: no '{split}' split; it has {', '.join(parts)}")
        samples = parts[key]
    elif data.suffix == ".csv":
        samples = read_label_csv(data).samples
    else:
        samples = scan_class_folders(data, file_pattern, "data").samples
    unknown = sorted({s.label for s in samples} - set(model_classes))
    if unknown:
        raise DataError(f"{data}: class(es) {unknown} are not among the model's labels {model_classes}; "
                        "rename the folders/labels to the model's class names")
    return samples


def evaluate_model(model_dir: str | Path, data: str | Path, output_dir: str | Path | None = None, split: str = "test",
                   batch_size: int = 64, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    from hf_medtl import report
    from hf_medtl.metrics import load_medical_classification
    from hf_medtl.models import ModelError

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ModelError(f"{model_dir}: not a saved model (no config.json); pass the output_dir of a finetune run")
    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(model_dir)
    classes = [model.config.id2label[i] for i in range(model.config.num_labels)]
    samples = load_samples(data, split, classes)
    _, eval_tf = build_transforms(preprocessing_from_processor(processor), augment=False)
    dataset = image_dataset(samples, classes, eval_tf)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    probs, labels = [], []
    with torch.inference_mode():
        for batch in loader:
            logits = model(pixel_values=batch["pixel_values"].to(device)).logits
            probs.append(logits.double().softmax(-1).cpu().numpy())
            labels.append(batch["labels"].numpy())
    probs, labels = np.concatenate(probs), np.concatenate(labels)

    metrics = load_medical_classification().compute(
        predictions=probs.argmax(1), references=labels, scores=probs, num_classes=len(classes), label_names=classes,
        n_bootstrap=n_bootstrap, seed=seed)
    data_name = Path(data).stem
    output_dir = Path(output_dir) if output_dir else model_dir.parent / f"{model_dir.name}_eval_{data_name}"
    output_dir.mkdir(parents=True, exist_ok=True)
    report.write_predictions(output_dir / "predictions.csv", [str(s.path) for s in samples], labels, probs, classes)
    summary = {"model": str(model_dir), "data": str(data), "images": len(samples)}
    report.write_report(output_dir, f"{model_dir.name} on {data_name}", {data_name: metrics}, {data_name: (probs, labels)},
                        summary)
    return {"output_dir": str(output_dir), **metrics}
