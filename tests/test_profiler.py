import pytest

from edgekit import keras
from edgekit.models import mobilenet_v2, profile


def hand_counted_net():
    inputs = keras.Input((8, 8, 2), name="in")
    a = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)  # 8x8x4
    b = keras.layers.BatchNormalization(name="bn")(a)  # in place
    c = keras.layers.ReLU(6.0, name="relu")(b)  # in place
    d = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(c)  # 4x4x4
    e = keras.layers.Conv2D(4, 1, name="pw")(d)  # 4x4x4
    f = keras.layers.Add(name="add")([d, e])  # 4x4x4
    g = keras.layers.Flatten(name="flat")(f)  # 64
    out = keras.layers.Dense(3, name="fc")(g)
    return keras.Model(inputs, out, name="hand")


def test_macs_and_params_match_a_hand_count():
    p = profile(hand_counted_net())
    macs = {l.name: l.macs for l in p.layers}
    assert macs["conv"] == 8 * 8 * (3 * 3 * 2) * 4  # 4,608
    assert macs["dw"] == 4 * 4 * 4 * (3 * 3)  # 576
    assert macs["pw"] == 4 * 4 * 4 * 4  # 256
    assert macs["fc"] == 64 * 3  # 192
    assert macs["add"] == macs["bn"] == macs["flat"] == 0
    assert p.macs == 4608 + 576 + 256 + 192
    params = {l.name: l.params for l in p.layers}
    assert params["conv"] == 3 * 3 * 2 * 4 + 4 and params["dw"] == 3 * 3 * 4 + 4
    assert p.params == hand_counted_net().count_params()


def test_peak_activation_memory_walks_the_graph():
    p = profile(hand_counted_net(), dtype_bytes=1)
    # in: 128 B; conv/bn/relu share one 256 B buffer; dw 64; pw 64; add 64; flat 64; fc 3.
    # While `conv` runs, the input (128) and its output (256) are live: 384, the peak.
    # While `add` runs: dw (64, still needed) + pw (64) + add (64) = 192.
    assert p.peak_activation_bytes == 128 + 256
    assert {l.name: l.output_bytes for l in p.layers}["conv"] == 256
    assert profile(hand_counted_net(), dtype_bytes=4).peak_activation_bytes == 4 * 384


def test_mobilenet_v2_matches_the_published_figures():
    p = profile(mobilenet_v2())
    assert p.params == 3_538_984
    assert abs(p.macs - 300e6) / 300e6 < 0.03  # paper: 300M multiply-adds
    # the largest live set is at 112x112 resolution: at least the 96-channel expansion (float)
    assert p.peak_activation_bytes >= 112 * 112 * 96 * 4


def test_profile_output_formats():
    p = profile(hand_counted_net())
    d = p.to_dict()
    assert d["macs"] == p.macs and len(d["layers"]) == len(p.layers)
    assert "hand: " in p.summary() and "MACs" in p.summary()
    with pytest.raises(ValueError, match="dtype_bytes"):
        profile(hand_counted_net(), dtype_bytes=3)
