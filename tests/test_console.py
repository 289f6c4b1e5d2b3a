"""A quiet console: the warnings other libraries raise on a normal small medical evaluation (scikit-learn's
per-class notes when a class is absent from the labels, matplotlib's empty legends) are silenced by the one setup
every command runs (console.setup_logging: finetune, evaluate, predict, cv, studies); hf_medtl says what matters."""
import warnings


def _noisy_calls():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import balanced_accuracy_score, precision_score

    balanced_accuracy_score([0, 0, 1], [0, 2, 1])  # a predicted class that no label holds
    precision_score([0, 1, 1], [1, 1, 1], average=None, labels=[0, 1])  # a class never predicted: ill-defined
    fig, ax = plt.subplots()
    ax.legend()  # nothing labelled yet
    plt.close(fig)


def test_expected_library_warnings_are_silenced_by_every_commands_setup():
    with warnings.catch_warnings(record=True) as before:
        warnings.simplefilter("always")
        _noisy_calls()
    assert len(before) >= 3, [str(w.message) for w in before]  # they do warn without the setup
    from hf_medtl.console import setup_logging

    with warnings.catch_warnings(record=True) as after:
        warnings.simplefilter("always")
        setup_logging()
        _noisy_calls()
    assert [str(w.message) for w in after] == []


def test_a_command_leaves_no_loader_worker_behind(tmp_path, image_folder, tiny_timm):
    """Persistent DataLoader workers (what GPU runs use) are stopped when the command returns: left to the
    interpreter's exit, torch joined them one 5-s timeout at a time, and on an H200 a finished run's process lived on
    for minutes with the GPU idle."""
    import multiprocessing

    from hf_medtl.cli import main
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_timm, image_folder, num_train_epochs=2, image_size=32, n_bootstrap=0,
                         dataloader_num_workers=2, dataloader_persistent_workers=True)
    assert main(["finetune", str(recipe)]) == 0
    assert multiprocessing.active_children() == []
