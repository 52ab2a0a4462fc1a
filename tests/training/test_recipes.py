"""Every shipped recipe is a valid TrainConfig (a typo in a recipe fails here, not on a GPU)."""

import pytest
import yaml

from chatbot.config import validate_config
from tests.conftest import REPO
from training.config import TrainConfig

RECIPES = sorted((REPO / "training" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(recipe):
    cfg = validate_config(TrainConfig, yaml.safe_load(recipe.read_text()), source=str(recipe))
    assert cfg.lora.r > 0


def test_published_hyperparameters_are_kept():
    cfg = validate_config(
        TrainConfig, yaml.safe_load((REPO / "training/recipes/llama3-8b-published-hparams.yaml").read_text())
    )
    assert (cfg.lora.r, cfg.lora.alpha, cfg.optim.learning_rate) == (128, 32, 2e-5)
    assert (cfg.optim.weight_decay, cfg.optim.warmup_steps, cfg.optim.optim) == (0.01, 10, "adamw_torch")
    assert len(RECIPES) >= 5
