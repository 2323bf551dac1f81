"""The sRGB transfer function of exported textures (framework/colour_space.py)."""
import numpy as np

from framework.colour_space import decode_srgb8, encode_srgb8, linear_to_srgb, srgb_to_linear


def test_known_values_of_the_srgb_curve():
    np.testing.assert_allclose(linear_to_srgb(np.array([0.0, 0.18, 0.5, 0.8, 1.0])),
                               [0.0, 0.46135, 0.73536, 0.90633, 1.0], atol=1e-5)
    assert encode_srgb8(np.array([0.8, 0.1, 0.1])).tolist() == [231, 89, 89]


def test_decode_inverts_encode():
    x = np.linspace(0.0, 1.0, 1001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    # 8 bits: every code decodes and re-encodes to itself; the round trip of an albedo is within half a code
    codes = np.arange(256, dtype=np.uint8)
    assert (encode_srgb8(decode_srgb8(codes)) == codes).all()
    assert np.abs(decode_srgb8(encode_srgb8(x)) - x).max() < 0.005


def test_the_two_pieces_meet():
    # the linear toe and the power curve join continuously at the breakpoints
    assert abs(linear_to_srgb(np.array(0.0031308 - 1e-9)) - linear_to_srgb(np.array(0.0031308 + 1e-9))) < 1e-6
    assert abs(srgb_to_linear(np.array(0.04045 - 1e-9)) - srgb_to_linear(np.array(0.04045 + 1e-9))) < 1e-6
