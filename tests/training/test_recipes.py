"""Every shipped recipe is a valid TrainConfig (a typo in a recipe fails here, not on a GPU)."""

import pytest
import yaml

from core.cli import validate_config
from tests.conftest import REPO
from training.config import TrainConfig

RECIPES = sorted((REPO / "training" / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_is_valid(recipe):
    validate_config(TrainConfig, yaml.safe_load(recipe.read_text()), source=str(recipe))  # raises on a bad key


def test_published_hyperparameters_are_kept():
    cfg = validate_config(
        TrainConfig, yaml.safe_load((REPO / "training/recipes/llama3-8b-published-hparams.yaml").read_text())
    )
    assert (cfg.lora.r, cfg.lora.lora_alpha, cfg.sft.learning_rate) == (128, 32, 2e-5)
    assert (cfg.sft.weight_decay, cfg.sft.warmup_steps, cfg.sft.optim) == (0.01, 10, "adamw_torch")
    assert (cfg.sft.num_train_epochs, cfg.max_steps) == (1, -1)  # one epoch over the training split
    assert len(RECIPES) >= 5


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_holds_only_what_it_changes(recipe):
    defaults = TrainConfig().model_dump(mode="json")

    def restated(values: dict, base: dict, prefix: str = "") -> list[str]:
        found = []
        for key, value in values.items():
            if isinstance(value, dict):
                found += restated(value, base[key], f"{prefix}{key}.")
            elif key in base and value == base[key]:  # sft may hold any SFTConfig field beside ours
                found.append(f"{prefix}{key}")
        return found

    assert restated(yaml.safe_load(recipe.read_text()), defaults) == []
