"""Model card (huggingface_hub ModelCard with model-index) and the push: pre-flight before any data is read,
private by default, exactly the run's final files uploaded, the token never written. All offline: HfApi is
replaced by a recorder; nothing here talks to the real Hub."""
import json
import time

import pytest

from hf_medtl.finetune import main
from tests.conftest import write_recipe


def errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("error:")]


class FakeApi:
    """Records what would be sent to the Hub."""
    calls: list = []
    who = {"name": "alice", "orgs": [{"name": "lab", "roleInOrg": "write"}],
           "auth": {"accessToken": {"role": "write"}}}

    def __init__(self, token=None):
        self.token = token

    def whoami(self, token=None):
        FakeApi.calls.append(("whoami", self.token))
        return FakeApi.who

    def create_repo(self, repo_id, private=None, exist_ok=False):
        FakeApi.calls.append(("create_repo", repo_id, private))

        class Url:
            pass

        url = Url()
        url.repo_id = repo_id if "/" in repo_id else f"alice/{repo_id}"
        return url

    def create_commit(self, repo_id, operations, commit_message=""):
        FakeApi.calls.append(("create_commit", repo_id, sorted(op.path_in_repo for op in operations)))


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub

    FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    return FakeApi


def test_offline_push_stops_before_any_data_is_read(tmp_path, image_folder, tiny_vit, capsys):
    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), data_dir=str(image_folder),
                          output_dir=str(tmp_path / "run"), push_to_hub=True, hub_model_id="alice/tiny",
                          hub_token="hf_do_not_write_me")
    start = time.perf_counter()
    assert main([str(recipe)]) == 2
    assert time.perf_counter() - start < 20  # seconds, not a training run; most of it is importing transformers
    [line] = errors(capsys)
    assert line == ("error: push_to_hub: HF_HUB_OFFLINE=1 is set, so nothing can be uploaded; unset it or set "
                    "push_to_hub false (nothing was trained)")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())  # no data report, no split


@pytest.mark.parametrize("who, repo, message", [
    ({"name": "alice", "auth": {"accessToken": {"role": "read"}}}, "alice/x", "push_to_hub: the token is read-only"),
    ({"name": "alice", "orgs": [{"name": "lab"}], "auth": {"accessToken": {"role": "write"}}}, "bob/x",
     "hub_model_id 'bob/x': user 'alice' cannot create repos in 'bob' (namespaces with write access: alice, lab)"),
    ({"name": "alice"}, "bad id!!", "hub_model_id 'bad id!!': not a valid repo id"),
])
def test_preflight_refuses_with_one_line(fake_hub, who, repo, message, tmp_path):
    from hf_medtl.errors import HfMedtlError
    from hf_medtl.hub.push import preflight
    from hf_medtl.config.recipe import load_recipe

    fake_hub.who = who
    args = load_recipe(write_recipe(tmp_path / "r.json", push_to_hub=True, hub_model_id=repo, data_dir="d")).training
    try:
        with pytest.raises(HfMedtlError, match="^" + __import__("re").escape(message)):
            preflight(args)
    finally:
        FakeApi.who = {"name": "alice", "orgs": [{"name": "lab", "roleInOrg": "write"}],
                       "auth": {"accessToken": {"role": "write"}}}


def test_preflight_without_a_token(monkeypatch, tmp_path):
    from hf_medtl.errors import HfMedtlError
    from hf_medtl.hub.push import preflight
    from hf_medtl.config.recipe import load_recipe

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "no_token"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "no_token"))
    args = load_recipe(write_recipe(tmp_path / "r.json", push_to_hub=True, hub_model_id="alice/x", data_dir="d")).training
    with pytest.raises(HfMedtlError, match="^push_to_hub: no Hugging Face token"):
        preflight(args)


def test_push_sends_exactly_the_final_files_privately_with_a_hub_card(fake_hub, tmp_path, image_folder, tiny_vit):
    from huggingface_hub import ModelCard

    recipe = write_recipe(tmp_path / "r.json", model_name_or_path=str(tiny_vit), data_dir=str(image_folder),
                          num_train_epochs=2, per_device_train_batch_size=8, seed=1, output_dir=str(tmp_path / "run"),
                          save_strategy="epoch", push_to_hub=True, hub_model_id="alice/tiny-medtl",
                          hub_token="hf_do_not_write_me")
    assert main([str(recipe)]) == 0
    out = tmp_path / "run"
    assert [c[0] for c in fake_hub.calls] == ["whoami", "create_repo", "create_commit"]  # pre-flight first
    assert fake_hub.calls[1] == ("create_repo", "alice/tiny-medtl", True)  # private unless hub_private_repo false
    sent = fake_hub.calls[2][2]
    assert any(p.name.startswith("checkpoint-") for p in out.iterdir())  # they exist, and are not sent
    assert (out / "training_args.bin").is_file()  # the Trainer's, on disk; not part of the shared model
    assert sent == sorted(["README.md", "config.json", "data_report.json", "history.json", "metrics.json",
                           "model.safetensors",  # a standard class: no code to trust
                           "predictions_test.csv", "predictions_test_no_tta.csv", "predictions_validation.csv",
                           "predictions_validation_no_tta.csv", "preprocessor_config.json", "recipe.json",
                           "report.json", "report.md", "split_manifest.csv"] + [f"plots/{n}.png" for n in (
                               "confusion_matrix_test", "confusion_matrix_validation", "roc_reliability_test",
                               "roc_reliability_validation", "training_curves")])
    assert not any(b"hf_do_not_write_me" in p.read_bytes() for p in out.rglob("*") if p.is_file())

    card = ModelCard.load(out / "README.md")
    metrics = json.loads((out / "metrics.json").read_text())["test"]
    results = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert results["accuracy"] == pytest.approx(metrics["accuracy"], abs=1e-4)
    assert results["f1"] == pytest.approx(metrics["f1_macro"], abs=1e-4) and card.data.eval_results[0].dataset_split == "test"
    assert card.data.pipeline_tag == "image-classification" and card.data.datasets is None  # no dataset_id given
    assert card.data.base_model is None  # a local checkpoint with no Hub origin: no false claim
    text = card.content
    assert text.count("# tiny-medtl") == 1 and str(tmp_path) not in text and ".staging" not in text
    assert "pipeline(\"image-classification\", model=\"alice/tiny-medtl\")" in text  # a standard class: no remote code
    assert "![training curves](plots/training_curves.png)" in text and "Not a medical device" in text
    assert "each kept within one split" in text  # the leakage check that ran
    from hf_medtl.config.recipe import load_recipe
    from hf_medtl.hub.card import render_model_card

    # the run's own files render the same card again (as after a template change)
    again = render_model_card(load_recipe(out / "recipe.json", ["--output_dir", str(out)]),
                              json.loads((out / "metrics.json").read_text()),
                              json.loads((out / "data_report.json").read_text()))
    assert str(again) == (out / "README.md").read_text()
