"""Sharing a run: its model card (card) and the upload of its finished outputs to the Hub (push)."""
from hf_medtl.hub.card import render_model_card
from hf_medtl.hub.push import preflight, push, upload_files

__all__ = ["preflight", "push", "render_model_card", "upload_files"]
