from zoo.cli import main


def test_demo_trains_with_zoo_callbacks_and_prints_the_lr(capsys):
    assert main(["demo", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "lr_policy=step base_lr=0.05" in out
    assert " - lr: 0.0500" in out  # the LR is in the progress output
    assert "Best epoch" in out and "the model holds its weights" in out
