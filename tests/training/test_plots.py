import json

import pandas as pd
import pytest

from training.plots import save_loss_plot, save_training_log

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_log_history() -> list[dict]:
    """What `trainer.state.log_history` holds after 20 steps, logging every 5, eval every 10,
    with an eval before training (step 0)."""
    history = [{"eval_loss": 3.1, "eval_runtime": 1.2, "eval_samples_per_second": 80.0, "epoch": 0, "step": 0}]
    for step in (5, 10, 15, 20):
        history.append(
            {
                "loss": 3.0 - 0.1 * step,
                "grad_norm": 1.0 + step / 100,
                "learning_rate": 2e-4 * (1 - step / 20),
                "epoch": step / 20,
                "step": step,
            }
        )
        if step % 10 == 0:
            history.append(
                {
                    "eval_loss": 2.9 - 0.05 * step,
                    "eval_runtime": 1.1,
                    "eval_samples_per_second": 90.0,
                    "eval_steps_per_second": 11.2,
                    "epoch": step / 20,
                    "step": step,
                }
            )
    history.append(
        {"train_runtime": 42.0, "train_samples_per_second": 1.9, "train_loss": 2.25, "epoch": 1.0, "step": 20}
    )
    return history


def assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > min_bytes  # a drawn plot, not an empty canvas


def test_training_log_has_one_row_per_step(tmp_path):
    history = fake_log_history()
    save_training_log(history, tmp_path)

    assert json.loads((tmp_path / "log.json").read_text()) == history
    table = pd.read_csv(tmp_path / "log.csv")
    assert list(table.columns) == ["step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm"]
    assert table["step"].tolist() == [0, 5, 10, 15, 20]  # the summary dict adds no row
    row = table.set_index("step").loc[10]
    assert row["loss"] == pytest.approx(2.0)
    assert row["eval_loss"] == pytest.approx(2.4)
    assert row["learning_rate"] == pytest.approx(1e-4)
    assert row["grad_norm"] == pytest.approx(1.1)
    assert table.set_index("step")["loss"].isna().tolist() == [True, False, False, False, False]
    assert table.set_index("step")["eval_loss"].notna().tolist() == [True, False, True, False, True]


def test_loss_plot(tmp_path):
    path = save_loss_plot(fake_log_history(), tmp_path / "plots" / "loss.png", title="v1: ada on SmolLM2")
    assert path == tmp_path / "plots" / "loss.png"
    assert_png(path)


def test_history_without_eval(tmp_path):
    history = [entry for entry in fake_log_history() if "eval_loss" not in entry]
    save_training_log(history, tmp_path)
    table = pd.read_csv(tmp_path / "log.csv")
    assert "eval_loss" not in table.columns
    assert table["step"].tolist() == [5, 10, 15, 20]
    assert_png(save_loss_plot(history, tmp_path / "loss.png"))


@pytest.mark.parametrize("history", [[], [{"train_runtime": 0.1, "train_loss": 0.0, "epoch": 0, "step": 0}]])
def test_empty_history(tmp_path, history):
    save_training_log(history, tmp_path)
    assert json.loads((tmp_path / "log.json").read_text()) == history
    assert pd.read_csv(tmp_path / "log.csv").empty
    assert_png(save_loss_plot(history, tmp_path / "loss.png"), min_bytes=2_000)
