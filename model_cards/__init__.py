"""Model-card templates (string.Template), installed as the package hf_medtl.model_cards."""
