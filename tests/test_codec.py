"""Toy codec: colour round trip, the position code, and ComfyUI's raw/normalised latent spaces."""
import math

import torch

from sgmd import codec, toyvideo


def _clips(n=6, seed=0):
    return toyvideo.make_batch(n, torch.Generator().manual_seed(seed))[1]


def test_colour_round_trip_and_upscale():
    frames = _clips()
    z = codec.encode(frames)
    assert z.shape == (6, 16, toyvideo.FRAMES, toyvideo.SIZE, toyvideo.SIZE)
    assert torch.allclose(codec.decode(z), frames, atol=1e-6)
    up = codec.decode(z, upscale=codec.VIEW_UPSCALE)
    assert up.shape[2] == toyvideo.SIZE * 8 and torch.equal(up[:, :, ::8, ::8], codec.decode(z))


def test_position_code_is_invisible_to_decoding_and_reads_back_in_closed_form():
    assert torch.allclose(codec.BASIS.T @ codec.PLACE, torch.zeros(3, codec.POSITION_FEATURES), atol=1e-6)
    assert torch.allclose(codec.PLACE.T @ codec.PLACE, torch.eye(codec.POSITION_FEATURES), atol=1e-6)
    f, h, w = 5, 6, 10
    code = codec.position_code(f, h, w)
    # decoding a latent that holds only the code gives mid grey (colour component zero)
    assert torch.allclose(codec.decode(code[None]), torch.full((1, f, h, w, 3), 0.5), atol=1e-6)
    feats = torch.einsum("ck,cfhw->kfhw", codec.PLACE, code)
    u = lambda n: (torch.arange(n) + 0.5) / n  # noqa: E731
    a = codec.POSITION_AMPLITUDE
    assert torch.allclose(feats[0, :, 0, 0], a * torch.cos(math.pi * u(f)), atol=1e-5)
    assert torch.allclose(feats[3, 0, :, 0], a * torch.cos(2 * math.pi * u(h)), atol=1e-5)
    assert torch.allclose(feats[4, 0, 0, :], a * torch.cos(math.pi * u(w)), atol=1e-5)
    # every latent position has its own code, so a RoPE-only model can tell where it is
    flat = code.reshape(16, -1).T
    assert torch.cdist(flat, flat).add(torch.eye(flat.shape[0]) * 9).min() > 0.1


def test_encode_is_colour_plus_code():
    frames = _clips(2, seed=3)
    black = codec.encode(torch.zeros_like(frames))
    assert torch.allclose(black, (-codec.BASIS.sum(1)).view(1, 16, 1, 1, 1) + codec.position_code(*black.shape[2:]), atol=1e-6)


def test_raw_and_normalised_are_inverse_and_match_comfyui_convention():
    z = codec.encode(_clips(2))
    raw = codec.to_raw(z)
    mean = torch.tensor(codec.WAN21_LATENT_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(codec.WAN21_LATENT_STD).view(1, 16, 1, 1, 1)
    assert torch.allclose(raw, z * std + mean)
    assert torch.allclose(codec.from_raw(raw), z, atol=1e-5)
    assert torch.allclose(codec.decode_raw(raw, upscale=1), codec.decode(z), atol=1e-6)


def test_with_opposite_swaps_only_its_kind_of_word():
    assert toyvideo.with_opposite("a red circle moving left slowly", "direction") == "a red circle moving right slowly"
    assert toyvideo.with_opposite("a red circle moving left slowly", "speed") == "a red circle moving left quickly"
    assert toyvideo.with_opposite("a blue square moving quickly", "speed") == "a blue square moving slowly"
    assert toyvideo.with_opposite("a white circle moving up", "direction") == "a white circle moving down"
    assert toyvideo.with_opposite("a white circle moving up", "speed") == "a white circle moving up"
    for p in toyvideo.all_prompts():  # an involution on the whole grammar, and it keeps the attributes it does not touch
        for kind in ("direction", "speed"):
            once = toyvideo.with_opposite(p.text, kind)
            assert toyvideo.with_opposite(once, kind) == p.text
            q = toyvideo.Prompt.parse(once)
            assert (q.colour, q.shape) == (p.colour, p.shape)
            other = "speed" if kind == "direction" else "direction"
            assert getattr(q, other) == getattr(p, other)
            assert getattr(q, kind) == toyvideo.OPPOSITE.get(getattr(p, kind))


def test_time_derivative_is_central_differences_with_one_sided_ends():
    """Closed forms: a quadratic in t has the exact derivative 2t inside (central differences are
    exact for it) and the one-sided differences 1 and 2F-3 at the ends; and it agrees with torch.gradient."""
    f = 8
    t = torch.arange(f, dtype=torch.float64)
    x = (t * t).view(1, f, 1, 1, 1).expand(2, f, 3, 3, 3)
    d = codec.time_derivative(x, 1)[0, :, 0, 0, 0]
    assert torch.equal(d[1:-1], 2 * t[1:-1]) and d[0] == 1 and d[-1] == 2 * f - 3
    frames = _clips()
    torch.testing.assert_close(codec.time_derivative(frames, 1), torch.gradient(frames, dim=1)[0])
    assert torch.equal(codec.time_derivative_matrix(1), torch.zeros(1, 1))  # one frame: nothing moves


def test_codec_v3_adds_the_time_derivative_on_its_own_channels():
    frames = _clips()
    v2, v3 = codec.encode(frames), codec.encode(frames, codec.CODEC_V3)
    assert torch.equal(codec.encode(frames, codec.CODEC_V2), v2)  # v2 is the default
    # BASIS_D: as BASIS (norm 16/3 per column), orthogonal to colour and position code
    torch.testing.assert_close(codec.BASIS_D.T @ codec.BASIS_D, torch.eye(3) * 16 / 3, atol=1e-5, rtol=0)
    assert (codec.BASIS_D.T @ codec.BASIS).abs().max() < 1e-5 and (codec.BASIS_D.T @ codec.PLACE).abs().max() < 1e-5
    extra = torch.einsum("cj,ncfhw->nfhwj", codec.BASIS_D, v3 - v2) / (16 / 3)  # read the derivative back
    torch.testing.assert_close(extra, 2 * codec.DERIVATIVE_AMPLITUDE * torch.gradient(frames, dim=1)[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(codec.decode(v3), codec.decode(v2), atol=1e-6, rtol=0)  # one decoder for both
    still = frames[:, :1].expand_as(frames).contiguous()  # a clip that does not move: nothing added
    torch.testing.assert_close(codec.encode(still, codec.CODEC_V3), codec.encode(still), atol=1e-6, rtol=0)
    assert codec.derivative_basis(codec.CODEC_V2) is None
    try:
        codec.encode(frames, "sgmd-toy-codec-v9")
    except ValueError as e:
        assert "unknown toy codec" in str(e)
    else:
        raise AssertionError("an unknown codec id was accepted")
