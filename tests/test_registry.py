"""Adding a technique is one module and one registration: a toy technique, registered here, runs
from a TOML recipe through the same path as the built-in ones, and gets its command-line flags."""

from dataclasses import dataclass

import numpy as np
import pytest

from edgekit import keras
from edgekit.core.errors import InputError
from edgekit.core.results import Result
from edgekit.optimize import Recipe, StepContext, Technique, copy_model, optimize, register, techniques, unregister


@dataclass(frozen=True)
class ScaleConfig:
    """Multiply every Dense kernel by ``factor`` (a toy: it only shows the plumbing)."""

    factor: float = 0.5

    def __post_init__(self):
        if not float(self.factor) > 0:
            raise InputError(f"factor must be > 0. Received factor={self.factor}")


@dataclass(frozen=True)
class Scaled(Result):
    """What the toy reports: the factor and how many kernels it scaled."""

    factor: float
    scaled: int

    def summary(self, label: str = "scale") -> str:
        return f"{label}: {self.scaled} kernel(s) scaled by {self.factor:g}"


def _apply(model, config, step: StepContext):
    new = copy_model(model)
    for layer in new.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel, *rest = layer.get_weights()
            layer.set_weights([kernel * config.factor, *rest])
    step.fine_tune(new)
    return new, Scaled(config.factor, sum(isinstance(l, keras.layers.Dense) for l in new.layers))


@pytest.fixture
def toy():
    from edgekit.app.cli.optimize import TECHNIQUE_FLAGS, Flag, add_technique_flags

    tech = register(Technique("scale", ScaleConfig, _apply, lambda c: f"scale {c.factor:g}", order=45))
    add_technique_flags("scale", Flag("--scale", "factor", float, "multiply every Dense kernel by F", "F"))
    yield tech
    unregister("scale")
    TECHNIQUE_FLAGS.pop("scale")


def test_a_registered_technique_runs_from_a_toml_recipe(toy, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    before = [w.copy() for w in model.get_weights()]
    recipe_path = tmp_path / "r.toml"
    recipe_path.write_text(
        "[fine_tune]\nepochs = 1\nlearning_rate = 1e-9\n\n"
        '[[steps]]\ntechnique = "scale"\nfactor = 0.25\n\n[[steps]]\ntechnique = "prune"\nsparsity = 0.5\n'
    )
    recipe = Recipe.from_toml(str(recipe_path))
    assert recipe.describe() == "scale 0.25 → prune 0.5"
    x = np.random.default_rng(0).random((64, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    result = optimize(model, recipe, x, y, validation_data=(x, y))
    # the technique's own report, in the result's JSON and its summary, without the runner knowing it
    assert result.to_dict()["steps"][0]["scale"] == {"factor": 0.25, "scaled": 2}
    assert "scale 0.25: 2 kernel(s) scaled by 0.25" in result.summary()
    # each Dense kernel was scaled (a learning rate of 1e-9 leaves it as scaled), then pruned to half zeros
    for layer, kernel in zip([l for l in result.model.layers if l.get_weights()], before[::2]):
        got = layer.get_weights()[0]
        kept = got != 0
        assert 0.4 <= 1 - kept.mean() <= 0.6
        np.testing.assert_allclose(got[kept], 0.25 * kernel[kept], rtol=1e-5, atol=1e-7)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # the input is untouched
    assert [t.name for t in techniques()].index("scale") == [t.name for t in techniques()].index("cluster") + 1
    with pytest.raises(InputError, match="factor must be > 0"):
        Recipe.from_dict({"steps": [{"technique": "scale", "factor": -1.0}]})
    with pytest.raises(InputError, match="factor must be a number; received 'big'"):
        Recipe.from_dict({"steps": [{"technique": "scale", "factor": "big"}]})


def test_a_registered_technique_gets_its_flags(toy):
    from edgekit.app.cli import build_parser

    args = build_parser("optimize").parse_args(
        ["optimize", "m.keras", "--data", "digits", "-o", "o.keras", "--scale", "0.5", "--prune", "0.8"]
    )
    from edgekit.app.cli.optimize import _recipe

    assert _recipe(args).describe() == "prune 0.8 → scale 0.5"


def test_unknown_technique_lists_the_registered_ones():
    with pytest.raises(InputError, match="technique must be one of depth, channel_prune, factorize, prune, cluster"):
        Recipe.from_dict({"steps": [{"technique": "sharpen"}]})
