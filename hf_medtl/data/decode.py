"""Decoding any supported medical image into an 8-bit RGB PIL image, with one documented rule per format.

- 8-bit L / RGB / RGBA / LA / P / CMYK / 1: converted to RGB by PIL (alpha is dropped).
- 16-bit or 32-bit grayscale (PNG/TIFF modes I;16, I, F; MedMNIST arrays that are not uint8): percentile
  windowing, the 0.5th..99.5th percentile mapped linearly onto 0..255 and clipped. Should those two percentiles
  coincide (a mostly constant image, a mask), the window is the pixels' minimum..maximum instead; an image of one
  value throughout is mid-grey 128.
- Non-finite pixels (float images: parametric maps such as ADC or T1/T2 with a NaN background): the window is
  computed on the finite pixels only. NaN and -Inf become 0 (the window's low end, black), +Inf becomes 255 (its
  high end); a one-valued image's finite pixels stay 128, apart from both. A file with no finite pixel at all is
  refused (DecodeError "no finite pixel value"). Every user of ``decode`` (the data check and training, evaluate,
  predict, export, the app) gets this rule.
- DICOM (.dcm, or the DICM preamble): pydicom's Modality LUT (Rescale Slope/Intercept or a Modality LUT
  Sequence), then its VOI LUT (a VOI LUT Sequence, else the first Window Center/Width with the exact DICOM
  formula of VOILUTFunction LINEAR / LINEAR_EXACT / SIGMOID), its output range mapped onto 0..255; with no
  VOI information, percentile windowing. MONOCHROME1 inverted so that bright means dense as in MONOCHROME2.
  PALETTE COLOR through its red/green/blue lookup tables (the stored values are indices, not intensities).
  Multi-frame files are refused (export slices first). Patient attributes are never read into a message.
- NIfTI (.nii, .nii.gz; nibabel, scaling slope/intercept applied): a 2-D image (or a volume with one slice) is
  windowed as a 16-bit image, shown as radiological viewers do (array rotated 90 degrees: rows run anterior to
  posterior). A 3-D volume is refused unless the recipe chooses a slice (nifti_slice, nifti_axis): hf_medtl
  classifies 2-D images. 4-D (time series) volumes are refused.
- EXIF orientation is applied (as ``transformers.image_utils.load_image`` does when a pipeline serves), so a
  rotated-EXIF JPEG reaches the model upright in training, evaluation and serving alike.
- Size: a file whose header declares more than ``max_pixels`` (width x height) is refused before its pixels
  are decoded, so a small file declaring a huge image (a decompression bomb) costs no memory.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

DICOM_EXTENSIONS = {".dcm", ".dicom"}
LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5


class DecodeError(Exception):
    """A file that is not a usable image; the message is the reason, for data_report.json."""


def window(arr: np.ndarray, low: float | None = None, high: float | None = None) -> np.ndarray:
    """Map [low, high] (default: the finite pixels' percentile window) linearly onto uint8 0..255; non-finite
    pixels as the module docstring states. DecodeError when no pixel is finite."""
    arr = arr.astype(np.float64)  # a copy: NaN is replaced in place below
    finite = np.isfinite(arr)
    values = arr
    if not finite.all():
        if not finite.any():
            raise DecodeError("no finite pixel value (every pixel is NaN or infinite)")
        # NaN has no place on the scale (and one NaN makes np.percentile NaN: an all-black image); it joins -Inf
        # at the low end, which the clip below sends to 0, as it sends +Inf to 255.
        arr[np.isnan(arr)] = -np.inf
        values = arr[finite]
    if low is None or high is None:
        low, high = percentile_window(values)
    if high <= low:  # one value: above it white, below it black, at it mid-grey (apart from both ends)
        out = np.full(arr.shape, 128, np.uint8)
        out[arr > low], out[arr < low] = 255, 0
        return out
    return np.clip((arr - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def percentile_window(values: np.ndarray) -> tuple[float, float]:
    """The 0.5th..99.5th percentile of finite ``values``; their minimum..maximum where those coincide, so that a
    sparse image (a mask, a few bright spots on one background value) keeps its content instead of one colour."""
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        low, high = values.min(), values.max()
    return float(low), float(high)


def from_array(arr: np.ndarray) -> Image.Image:
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        arr = window(arr)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr).convert("RGB")


def is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    with open(path, "rb") as f:
        return f.read(132)[128:132] == b"DICM"


def is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def nifti_slice(path: Path, axis: int | None = None, index=None, max_pixels: int | None = None) -> np.ndarray:
    """The 2-D array of a NIfTI file, oriented for display: the image itself, or slice ``index`` ("middle": the
    central one) along ``axis`` of a 3-D volume. DecodeError (with what to set) otherwise."""
    import nibabel

    try:
        img = nibabel.load(str(path))
    except (nibabel.filebasedimages.ImageFileError, OSError, EOFError, ValueError) as e:
        raise DecodeError("not a readable NIfTI file" if "gzip" not in str(e).lower() else "corrupt or truncated") from None
    shape = tuple(int(s) for s in img.shape)
    kept = [s for s in shape if s > 1]
    # A slice asked of a 3-D array is taken along nifti_axis even when another axis is a singleton: a (40, 1, 12)
    # volume's axis-2 slice is a 40 x 1 line (refused below), not its 40 x 12 plane of another orientation.
    if (len(kept) == 2 and not (index is not None and len(shape) == 3)) or index is None:
        if len(kept) != 2:
            raise DecodeError(f"a {len(kept)}-D NIfTI volume {shape}; hf_medtl classifies 2-D images: set nifti_slice "
                              "(and nifti_axis) to choose one, or export the 2-D slices you mean")
        _too_large(kept[0], kept[1], max_pixels)
        arr = np.asarray(img.dataobj).reshape(kept)
    else:
        if len(shape) != 3 or axis not in (0, 1, 2):
            raise DecodeError(f"nifti_slice needs a 3-D volume and nifti_axis 0, 1 or 2; got shape {shape}")
        at = shape[axis] // 2 if index == "middle" else int(index)
        if not 0 <= at < shape[axis]:
            raise DecodeError(f"nifti_slice {index} outside the volume's {shape[axis]} slices along axis {axis}")
        rest = [s for i, s in enumerate(shape) if i != axis]
        if min(rest) < 2:
            singleton = shape.index(1)
            raise DecodeError(f"slices along nifti_axis {axis} of a {shape} volume are {rest[0]} x {rest[1]} lines, "
                              f"not images; its image plane is across axis {singleton}: set nifti_axis {singleton}")
        _too_large(rest[0], rest[1], max_pixels)
        arr = np.asarray(img.dataobj[tuple(at if i == axis else slice(None) for i in range(3))])
    return np.rot90(np.asarray(arr, dtype=np.float64)).copy()


def _too_large(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise DecodeError(f"image too large ({width}x{height} pixels declared, max_image_pixels {max_pixels}); "
                          "downsample or tile it, or raise max_image_pixels")


def _voi_output_range(ds) -> tuple[float, float]:
    """The range pydicom's VOI LUT / windowing output spans (PS3.3 C.11.2), to map onto 0..255."""
    if "VOILUTSequence" in ds:
        return 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    if "ModalityLUTSequence" in ds:
        low, high = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, 2.0 ** int(ds.BitsStored) - 1
    else:
        low, high = -(2.0 ** (int(ds.BitsStored) - 1)), 2.0 ** (int(ds.BitsStored) - 1) - 1
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and "ModalityLUTSequence" not in ds:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def decode_dicom(path: Path, max_pixels: int | None = None) -> Image.Image:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
        if frames > 1:
            raise DecodeError(f"multi-frame DICOM ({frames} frames); export single slices")
        _too_large(int(ds.Columns), int(ds.Rows), max_pixels)
        arr = ds.pixel_array
        photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
        if photometric == "PALETTE COLOR":  # the stored values are palette indices, not intensities
            return Image.fromarray(_palette_rgb(arr, ds))
        if not photometric.startswith("MONOCHROME"):
            return from_array(arr)
        arr = apply_modality_lut(arr, ds)
        if "VOILUTSequence" in ds:
            # A lookup table is indexed by integers, within its domain. pydicom 3 computes the index in the
            # LUT's own dtype (uint8 for an 8-bit LUT), so inputs beyond it wrap around: clip them first.
            descriptor = ds.VOILUTSequence[0].LUTDescriptor
            entries, first = int(descriptor[0]) or 65536, int(descriptor[1])  # 0 entries means 2^16
            arr = np.clip(np.round(arr), first, first + entries - 1).astype(np.int64)
        if "VOILUTSequence" in ds or ("WindowCenter" in ds and "WindowWidth" in ds):
            out = window(apply_voi_lut(arr, ds, index=0), *_voi_output_range(ds))
        else:
            out = window(arr)
    except DecodeError:
        raise
    except Exception as e:  # pydicom raises many types for broken, compressed or inconsistent files
        raise DecodeError(f"unreadable DICOM ({type(e).__name__})") from None
    if photometric == "MONOCHROME1":
        out = 255 - out
    return Image.fromarray(out).convert("RGB")


def _palette_rgb(arr: np.ndarray, ds) -> np.ndarray:
    """A PALETTE COLOR image through its red/green/blue lookup tables, as 8-bit RGB (16-bit table entries scaled)."""
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(arr, ds)
    bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
    return np.clip(np.round(rgb.astype(np.float64) * 255.0 / (2 ** bits - 1)), 0, 255).astype(np.uint8)


def decode(source, max_pixels: int | None = None) -> Image.Image:
    """An RGB image from a file path, an in-memory array or PIL image; DecodeError with the reason otherwise.
    ``max_pixels``: refuse an image whose declared width x height exceeds it, before decoding its pixels."""
    if isinstance(source, np.ndarray):
        if source.ndim >= 2:
            _too_large(source.shape[1], source.shape[0], max_pixels)
        return from_array(source)
    if isinstance(source, Image.Image):
        source = ImageOps.exif_transpose(source)
        return from_array(np.asarray(source)) if source.mode in ("I;16", "I", "F") else source.convert("RGB")
    path = Path(source)
    try:
        if path.stat().st_size == 0:
            raise DecodeError("zero-byte file")
        if is_nifti(path):
            return from_array(nifti_slice(path, max_pixels=max_pixels))
        if is_dicom(path):
            return decode_dicom(path, max_pixels)
        with Image.open(path) as img:
            _too_large(img.width, img.height, max_pixels)  # from the header: nothing decoded yet
            img.load()  # forces the full decode: truncated files fail here, not in training
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return from_array(np.asarray(img))
            return img.convert("RGB")
    except DecodeError:
        raise
    except FileNotFoundError:
        raise DecodeError("file not found") from None
    except IsADirectoryError:
        raise DecodeError("a folder, not an image file") from None
    except Image.DecompressionBombError:
        raise DecodeError("image too large (decompression-bomb limit)") from None
    except (OSError, SyntaxError, ValueError) as e:
        reason = "not an image" if "cannot identify" in str(e) else "corrupt or truncated"
        raise DecodeError(reason) from None
