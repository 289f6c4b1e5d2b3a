"""Serving a saved model: the one inference path with TTA defined once (core), and what is built on it — predict,
`hf-medtl evaluate` (evaluate), Grad-CAM (explain), the ONNX export and the app. Modules import torch when used, so `import hf_medtl` stays light."""
