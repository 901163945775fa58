import numpy as np
import pytest

from edgekit.core.data import digits, load_data, load_npz, resize_bilinear
from edgekit.core.errors import InputError
from edgekit.core.samples import fit_to_input


def test_digits_is_real_data_with_fixed_split(digits_ds):
    ds = digits_ds
    assert ds.x_train.shape == (1437, 32, 32, 1) and ds.x_test.shape == (360, 32, 32, 1)
    assert ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert sorted(np.unique(ds.y_test)) == list(range(10))
    again = digits()
    np.testing.assert_array_equal(again.y_test, ds.y_test)
    np.testing.assert_array_equal(again.x_test, ds.x_test)


def test_resize_bilinear_matches_tf_image_resize():
    from edgekit.core.compat import tf

    img = np.random.default_rng(0).random((3, 8, 8))
    ours = resize_bilinear(img, 32)
    ref = tf.image.resize(img[..., None], (32, 32), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_npz_with_x_and_y(npz):
    path = npz(x=np.zeros((5, 4, 4), np.float32), y=np.arange(5))
    ds = load_data(path)
    assert ds.x_train.shape == (5, 4, 4) and ds.x_test is ds.x_train
    np.testing.assert_array_equal(ds.y_test, np.arange(5))


def test_npz_with_splits_and_one_hot_labels(npz):
    path = npz(
        x_train=np.ones((6, 3)), y_train=np.eye(3)[[0, 1, 2, 0, 1, 2]], x_test=np.ones((2, 3)), y_test=np.array([2, 1])
    )
    ds = load_npz(path)
    np.testing.assert_array_equal(ds.y_train, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(ds.y_test, [2, 1])


def test_npz_labels_are_class_ids_or_targets(npz):
    """Integers (and integral floats, one-hot rows) are class ids; other real values are regression
    targets, kept as float32 in whatever shape they have per sample."""
    assert load_npz(npz(x=np.ones((2, 2)), y=np.array([0.5, 1.0]))).y_test.dtype == np.float32
    assert load_npz(npz(x=np.ones((2, 2)), y=np.array([[0.5, 1.5], [2.0, 3.0]]))).y_test.shape == (2, 2)
    np.testing.assert_array_equal(load_npz(npz(x=np.ones((2, 2)), y=np.array([1.0, 0.0]))).y_test, [1, 0])
    np.testing.assert_array_equal(load_npz(npz(x=np.ones((2, 2)), y=np.eye(3)[[2, 0]])).y_test, [2, 0])


def test_npz_without_labels(npz):
    ds = load_npz(npz(x=np.ones((4, 2, 2))))
    assert not ds.has_labels


@pytest.mark.parametrize(
    "arrays, message",
    [
        (dict(images=np.ones((2, 2))), "expected 'x'"),
        (dict(x=np.ones((3, 2)), y=np.arange(4)), "one label or target per sample"),
        (dict(x=np.ones((0, 2))), "non-empty"),
        (dict(x=np.array([["a"], ["b"]])), "numeric"),
        (dict(x=np.ones((2, 2)), y=np.array([0.5, np.nan])), "NaN or infinite"),
    ],
)
def test_bad_npz_is_a_clear_error(npz, arrays, message):
    with pytest.raises(InputError, match=message):
        load_npz(npz(**arrays))


def test_missing_corrupt_and_unknown_data(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_data(str(tmp_path / "nope.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="cannot read"):
        load_data(str(bad))
    with pytest.raises(InputError, match="expected 'digits'"):
        load_data("mnist")


def test_fit_to_input_shapes_and_values():
    x = np.zeros((4, 32, 32), np.float64)
    out = fit_to_input(x, (32, 32, 1), "data")
    assert out.shape == (4, 32, 32, 1) and out.dtype == np.float32
    assert fit_to_input(np.zeros((2, 7, 5, 3)), (None, None, 3), "data").shape == (2, 7, 5, 3)
    with pytest.raises(InputError, match=r"shape \(4, 8, 8\); the model expects \(N, 32, 32, 1\)"):
        fit_to_input(np.zeros((4, 8, 8)), (32, 32, 1), "calibration data")
    bad = np.zeros((3, 2, 2, 1))
    bad[1, 0, 0, 0] = np.nan
    bad[2, 1, 1, 0] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        fit_to_input(bad, (2, 2, 1), "calibration data")
