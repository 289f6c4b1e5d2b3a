"""Synthetic "organ" scans like a new user's (issue 31): 96-px grayscale, one modality, three classes (normal,
calcification, lesion), a few images per patient. Every image is its own acquisition (new noise, the organ moved
and reshaped a little), so the images are similar but none is a copy of another: a near-duplicate guard that
groups them is chaining look-alikes, not finding copies."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

CLASSES = ("normal", "calcification", "lesion")
SIZE = 96


def organ(rng: np.random.Generator, shape: dict, label: str) -> np.ndarray:
    """One acquisition of a patient's organ (``shape``): jittered position and axes, new noise and texture."""
    y, x = np.mgrid[:SIZE, :SIZE].astype(np.float32)
    cy, cx = shape["cy"] + rng.normal(0, 1.5), shape["cx"] + rng.normal(0, 1.5)
    ay, ax = shape["ay"] + rng.normal(0, 1.0), shape["ax"] + rng.normal(0, 1.0)
    t = shape["angle"] + rng.normal(0, 0.05)
    u, v = (y - cy) * np.cos(t) + (x - cx) * np.sin(t), -(y - cy) * np.sin(t) + (x - cx) * np.cos(t)
    inside = (u / ay) ** 2 + (v / ax) ** 2
    body = gaussian_filter((inside < 1).astype(np.float32), 1.5)
    texture = gaussian_filter(rng.normal(0, 1, (SIZE, SIZE)), 3) * 60
    img = 25 + body * (shape["level"] + texture - 15 * inside)
    if label == "calcification":
        for _ in range(int(rng.integers(3, 6))):
            r, a = rng.uniform(0, 0.7), rng.uniform(0, 2 * np.pi)
            py, px = cy + r * ay * np.sin(a), cx + r * ax * np.cos(a)
            img += 90 * np.exp(-((y - py) ** 2 + (x - px) ** 2) / 2.0)
    elif label == "lesion":
        py, px = cy + rng.normal(0, ay / 4), cx + rng.normal(0, ax / 4)
        img -= 55 * body * np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * rng.uniform(4, 7) ** 2))
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def organ_images(per_class: int = 150, seed: int = 0) -> list[tuple[np.ndarray, str, int]]:
    """(image, class, patient) of ``per_class`` images of each class, 3-4 per patient (one class per patient)."""
    rng = np.random.default_rng(seed)
    out, patient = [], 0
    for label in CLASSES:
        left = per_class
        while left:
            n = min(left, int(rng.integers(3, 5)))
            shape = {"cy": SIZE / 2 + rng.normal(0, 3), "cx": SIZE / 2 + rng.normal(0, 3),
                     "ay": rng.uniform(26, 34), "ax": rng.uniform(20, 28), "angle": rng.uniform(-0.3, 0.3),
                     "level": rng.uniform(100, 130)}
            out += [(organ(rng, shape, label), label, patient) for _ in range(n)]
            left -= n
            patient += 1
    return out


def write_organs(root: Path, per_class: int = 150, seed: int = 0, relabel: dict | None = None,
                 id_column: str = "ptid", numeric_ids: bool = False) -> Path:
    """root/images/<n>.png and root/labels.csv (path, label, ``id_column``: the patient): organ_images as files.
    ``relabel`` maps an image's number to the label its row gets instead (e.g. 'Lesion' on some lesion rows);
    ``numeric_ids``: patients as 1, 2, 3... rather than pt000, pt001... Returns the CSV."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (img, label, patient) in enumerate(organ_images(per_class, seed)):
        Image.fromarray(img).save(root / "images" / f"{k:04d}.png")
        pid = str(patient + 1) if numeric_ids else f"pt{patient:03d}"
        rows.append([f"images/{k:04d}.png", (relabel or {}).get(k, label), pid])
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", id_column])
        w.writerows(rows)
    return root / "labels.csv"


def class_folders(csv_file: Path, root: Path) -> Path:
    """The same images as class folders (root/<label>/<n>.png): no patient column at all."""
    for r in csv.DictReader(open(csv_file)):
        (root / r["label"]).mkdir(parents=True, exist_ok=True)
        src = csv_file.parent / r["path"]
        (root / r["label"] / src.name).write_bytes(src.read_bytes())
    return root
