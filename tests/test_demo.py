import pytest
from conftest import assert_clean_error, run_cli

from edgekit.app.demo import run_demo
from edgekit.core.errors import InputError


def test_demo_refuses_a_model_that_is_not_a_digits_classifier(tmp_path):
    out = tmp_path / "ae"
    with pytest.raises(InputError, match="10-class image classifier; fc_autoencoder .* Choose one of: .*ds_cnn"):
        run_demo(str(out), model_name="fc_autoencoder", log=None)
    assert not out.exists()
    assert_clean_error(
        run_cli("demo", "--model", "mobilenet_v9", "--out", tmp_path / "x"),
        contains="unknown model 'mobilenet_v9'; available:",
    )
    assert not (tmp_path / "x").exists()
