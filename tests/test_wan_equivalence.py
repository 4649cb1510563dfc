"""Our Wan 2.1 T2V DiT (sgmd/wan.py) against independent implementations, plus weight loading.

* diffusers `WanTransformer3DModel` (installed): random weights, converted to Wan names with our own
  test-only key map, loaded through `sgmd.weights.wan_from_state_dict` (config inference included).
* ComfyUI `comfy.ldm.wan.model.WanModel`: only when COMFYUI_DIR points at a checkout; it runs in a
  subprocess with COMFYUI_PYTHON (ComfyUI needs its own venv), exchanging safetensors files.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sgmd.errors import SGMDError
from sgmd.wan import COMFY_PREFIX, WanConfig, WanModel, strip_prefix
from sgmd.weights import load_wan, read_safetensors, wan_from_state_dict, write_safetensors

torch.set_num_threads(1)

TOL_FP32 = 1e-4

# The tiny architecture shared by all comparisons: one 128-wide head, 2 blocks.
DIFFUSERS_TINY = dict(
    num_attention_heads=1, attention_head_dim=128, in_channels=16, out_channels=16, text_dim=4096,
    freq_dim=256, ffn_dim=256, num_layers=2, patch_size=(1, 2, 2), cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
)
OUR_TINY = WanConfig(dim=128, ffn_dim=256, num_layers=2, in_dim=16, out_dim=16, text_dim=4096, freq_dim=256,
                     patch_size=(1, 2, 2), eps=1e-6)


# ---------------------------------------------------------------------------------------------
# Test-only key map: original Wan names <-> diffusers WanTransformer3DModel names (T2V only).

_TOP_MODULES = {
    "patch_embedding": "patch_embedding",
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "head.head": "proj_out",
    "head.modulation": "scale_shift_table",  # a bare parameter
}
_BLOCK_MODULES = {
    "modulation": "scale_shift_table",  # a bare parameter
    # Wan norm3 is the affine LayerNorm before cross-attention = diffusers norm2; Wan norm1/norm2
    # (and diffusers norm1/norm3) have no parameters.
    "norm3": "norm2",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
for _wan, _dif in (("self_attn", "attn1"), ("cross_attn", "attn2")):
    _BLOCK_MODULES.update({
        f"{_wan}.q": f"{_dif}.to_q", f"{_wan}.k": f"{_dif}.to_k", f"{_wan}.v": f"{_dif}.to_v",
        f"{_wan}.o": f"{_dif}.to_out.0", f"{_wan}.norm_q": f"{_dif}.norm_q", f"{_wan}.norm_k": f"{_dif}.norm_k",
    })
_TOP_INV = {v: k for k, v in _TOP_MODULES.items()}
_BLOCK_INV = {v: k for k, v in _BLOCK_MODULES.items()}


def _convert_key(key: str, top: dict, block: dict) -> str:
    suffix = ""
    for s in (".weight", ".bias"):
        if key.endswith(s):
            key, suffix = key[: -len(s)], s
    if key.startswith("blocks."):
        _, idx, rest = key.split(".", 2)
        if rest not in block:
            raise KeyError(f"no mapping for block key {key}{suffix}")
        return f"blocks.{idx}.{block[rest]}{suffix}"
    if key not in top:
        raise KeyError(f"no mapping for key {key}{suffix}")
    return top[key] + suffix


def wan_to_diffusers_key(key: str) -> str:
    return _convert_key(key, _TOP_MODULES, _BLOCK_MODULES)


def diffusers_to_wan_key(key: str) -> str:
    return _convert_key(key, _TOP_INV, _BLOCK_INV)


def diffusers_to_wan(sd: dict) -> dict:
    return {diffusers_to_wan_key(k): v for k, v in sd.items()}


# ---------------------------------------------------------------------------------------------
# helpers


def _randomize_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter random (norm gains too), scaled so activations stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if "modulation" in name or "scale_shift_table" in name:
                p.copy_(0.3 * r)
            elif p.ndim >= 2:
                p.copy_(r / math.sqrt(p[0].numel()))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * r)
            else:
                p.copy_(0.2 * r)


def _inputs(seed: int = 0, shape=(2, 16, 3, 8, 6), ctx_len: int = 7, text_dim: int = 4096):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g)
    ctx = torch.randn(shape[0], ctx_len, text_dim, generator=g)
    t = torch.tensor([937.5, 250.0][: shape[0]])  # a different timestep per sample
    return x, t, ctx


def _random_wan_sd(cfg: WanConfig = OUR_TINY, seed: int = 1) -> dict:
    model = WanModel(cfg)
    _randomize_(model, seed)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg, msg
    return msg


@pytest.fixture(scope="module")
def diffusers_pair():
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.WanTransformer3DModel(**DIFFUSERS_TINY).eval()
    _randomize_(ref, seed=123)
    ours = wan_from_state_dict(diffusers_to_wan(ref.state_dict())).eval()
    return ref, ours


# ---------------------------------------------------------------------------------------------
# diffusers


def test_key_map_is_a_bijection_over_both_layouts(diffusers_pair):
    ref, ours = diffusers_pair
    wan_keys, dif_keys = set(ours.state_dict()), set(ref.state_dict())
    assert {wan_to_diffusers_key(k) for k in wan_keys} == dif_keys
    assert {diffusers_to_wan_key(k) for k in dif_keys} == wan_keys
    assert all(diffusers_to_wan_key(wan_to_diffusers_key(k)) == k for k in wan_keys)


def test_key_map_agrees_with_diffusers_single_file_converter(diffusers_pair):
    """diffusers ships its own Wan->diffusers converter: an independent check of our table."""
    su = pytest.importorskip("diffusers.loaders.single_file_utils")
    if not hasattr(su, "convert_wan_transformer_to_diffusers"):
        pytest.skip("this diffusers has no convert_wan_transformer_to_diffusers")
    _, ours = diffusers_pair
    wan_sd = {COMFY_PREFIX + k: v for k, v in ours.state_dict().items()}
    converted = su.convert_wan_transformer_to_diffusers(dict(wan_sd))
    assert set(converted) == {wan_to_diffusers_key(k) for k in ours.state_dict()}
    for k, v in ours.state_dict().items():
        assert converted[wan_to_diffusers_key(k)] is v or torch.equal(converted[wan_to_diffusers_key(k)], v)


def test_config_inferred_from_diffusers_weights(diffusers_pair):
    _, ours = diffusers_pair
    assert ours.cfg == OUR_TINY
    assert ours.cfg.num_heads == DIFFUSERS_TINY["num_attention_heads"]


def test_matches_diffusers_fp32(diffusers_pair):
    ref, ours = diffusers_pair
    x, t, ctx = _inputs()
    with torch.no_grad():
        want = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx).sample
        got = ours(x, t, ctx)
    assert got.shape == want.shape == x.shape
    assert want.abs().max() > 0.1  # not a trivially small output
    diff = _max_diff(got, want)
    print(f"max |ours - diffusers| = {diff:.3e} (output max {want.abs().max():.3f})")
    assert diff <= TOL_FP32
    # the two samples really differ (per-sample timestep) and the frames differ (3-D RoPE)
    assert _max_diff(got[0], got[1]) > 1e-2
    assert _max_diff(got[:, :, 0], got[:, :, 1]) > 1e-2


def test_matches_diffusers_single_timestep_and_square_latent(diffusers_pair):
    ref, ours = diffusers_pair
    x, _, ctx = _inputs(seed=5, shape=(1, 16, 2, 4, 4), ctx_len=3)
    t = torch.tensor([500.0])
    with torch.no_grad():
        want = ref(hidden_states=x, timestep=t, encoder_hidden_states=ctx).sample
        got = ours(x, t, ctx)
    assert _max_diff(got, want) <= TOL_FP32


def test_conventions_match_diffusers_pieces(diffusers_pair):
    """Timestep embedding, RoPE and modulation conventions, piece by piece."""
    from diffusers.models.embeddings import get_timestep_embedding

    from sgmd.wan import rope_frequencies, rope_grid, sinusoidal_embedding

    ref, ours = diffusers_pair
    t = torch.tensor([0.0, 1.0, 250.0, 937.5, 1000.0])
    # diffusers: flip_sin_to_cos=True, downscale_freq_shift=0 -> [cos, sin] of t * 10000^(-i/half)
    want = get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    assert _max_diff(sinusoidal_embedding(t, 256), want) < 5e-4  # diffusers computes the angle in fp32

    # RoPE: per-axis split of the 64 complex pairs [22, 21, 21] and per-token rotation
    grid = (3, 4, 3)
    rot = rope_grid(rope_frequencies(128), grid)  # [S, 64] complex
    cos, sin = ref.rope(torch.zeros(1, 16, *[g * p for g, p in zip(grid, (1, 2, 2))]))
    assert (ref.rope.t_dim, ref.rope.h_dim, ref.rope.w_dim) == (44, 42, 42)
    assert _max_diff(rot.real, cos[0, :, 0, 0::2]) < 1e-6
    assert _max_diff(rot.imag, sin[0, :, 0, 1::2]) < 1e-6

    # time embedding + projection (diffusers: temb, timestep_proj)
    ctx = torch.randn(2, 3, 4096)
    tt = torch.tensor([937.5, 250.0])
    with torch.no_grad():
        temb, tproj, _, _ = ref.condition_embedder(tt, ctx)
        e = ours.time_embedding(sinusoidal_embedding(tt, 256))
        e6 = ours.time_projection(e)
    assert _max_diff(e, temb) < 1e-4
    assert _max_diff(e6, tproj) < 1e-4


# ---------------------------------------------------------------------------------------------
# loading: prefix, dtypes, config inference


def test_comfy_prefix_loads_identically():
    sd = _random_wan_sd()
    plain = wan_from_state_dict(sd)
    prefixed = wan_from_state_dict({COMFY_PREFIX + k: v for k, v in sd.items()})
    assert strip_prefix({COMFY_PREFIX + "a": 1}) == {"a": 1}
    x, t, ctx = _inputs(shape=(1, 16, 2, 4, 4), ctx_len=3)
    with torch.no_grad():
        assert torch.equal(plain(x, t[:1], ctx), prefixed(x, t[:1], ctx))


@pytest.mark.parametrize("file_dtype", [torch.bfloat16, torch.float16])
def test_half_precision_files_load(tmp_path, file_dtype):
    """A bf16 / fp16 file: config inferred, fp32 compute on the stored weights matches a reference
    built from the same rounded weights exactly, and the original fp32 weights closely.

    Tolerance: storing the weights rounds each by a relative u (bf16 u = 2^-8, fp16 u = 2^-11).
    With ~10 chained random linear maps the output error is a few u relative to the output's scale
    (errors add in quadrature); we allow 8u * max|out| (bf16: 3.1e-2, fp16: 3.9e-3); measured ~1u.
    Running the whole network in that dtype (dtype=file_dtype) also rounds activations at every
    layer: allowed 16u * max|out|; measured ~2u."""
    sd = _random_wan_sd()
    path = tmp_path / f"wan_{str(file_dtype).split('.')[-1]}.safetensors"
    write_safetensors(path, {k: v.to(file_dtype) for k, v in sd.items()})
    tensors, _ = read_safetensors(path)
    assert all(v.dtype == file_dtype for v in tensors.values())

    model = load_wan(path)  # fp32 compute
    assert model.cfg == OUR_TINY and model.dtype == torch.float32
    exact = wan_from_state_dict({k: v.to(file_dtype).float() for k, v in sd.items()})
    full = wan_from_state_dict(sd)
    x, t, ctx = _inputs()
    u = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[file_dtype]
    with torch.no_grad():
        ref = full(x, t, ctx)
        got = model(x, t, ctx)
        assert torch.equal(got, exact(x, t, ctx))
        scale = ref.abs().max().item()
        assert _max_diff(got, ref) <= 8 * u * scale

        low = load_wan(path, dtype=file_dtype)
        assert low.dtype == file_dtype
        out = low(x.to(file_dtype), t, ctx.to(file_dtype))
        assert out.dtype == file_dtype and torch.isfinite(out).all()
        assert _max_diff(out, ref) <= 16 * u * scale


def test_module_dtype_casts_keep_rope_and_run():
    """Regression: `model.to(bf16)` used to cast the complex RoPE buffer to real (dropping the
    imaginary part) and the fp32 time embedding hit bf16 time_projection / norm weights."""
    sd = _random_wan_sd()
    x, t, ctx = _inputs(shape=(1, 16, 3, 4, 4), ctx_len=3)
    with torch.no_grad():
        ref = wan_from_state_dict(sd)(x, t[:1], ctx)
        loaded = wan_from_state_dict(sd, dtype=torch.bfloat16)(x, t[:1], ctx)
        cast = wan_from_state_dict(sd).to(torch.bfloat16)(x, t[:1], ctx)
        assert torch.equal(cast, loaded)  # same bf16 weights, same computation
        assert _max_diff(cast, ref) <= 16 * 2.0**-8 * ref.abs().max().item()  # see the bf16 file test
        f64 = wan_from_state_dict(sd).to(torch.float64)(x.double(), t[:1], ctx.double())
        assert _max_diff(f64, ref) <= TOL_FP32
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = wan_from_state_dict(sd)(x, t[:1], ctx)
        assert _max_diff(auto, ref) <= 16 * 2.0**-8 * ref.abs().max().item()


def test_config_inference_from_state_dict():
    cfg = WanConfig(dim=256, ffn_dim=384, num_layers=3, in_dim=20, out_dim=8, text_dim=96, freq_dim=64,
                    patch_size=(1, 2, 2))
    sd = WanModel(cfg).state_dict()
    got = WanConfig.from_state_dict(sd)
    assert got == cfg
    assert got.num_heads == 2
    assert WanConfig.from_state_dict(strip_prefix({COMFY_PREFIX + k: v for k, v in sd.items()})) == cfg
    # the real Wan 2.1 sizes, from shapes alone (meta tensors: no memory)
    with torch.device("meta"):
        for dim, ffn, layers in ((1536, 8960, 30), (5120, 13824, 40)):
            big = WanConfig(dim=dim, ffn_dim=ffn, num_layers=layers)
            shapes = {k: torch.empty(v.shape, device="meta") for k, v in WanModel(big).state_dict().items()}
            got = WanConfig.from_state_dict(shapes)
            assert got == big and got.num_heads == dim // 128
    # a different patch: inferred from patch_embedding, head output width follows
    cfg2 = WanConfig(dim=128, ffn_dim=128, num_layers=1, patch_size=(1, 1, 1), text_dim=32, freq_dim=32)
    m2 = wan_from_state_dict(_random_wan_sd(cfg2))
    assert m2.cfg == cfg2
    out = m2(torch.randn(1, 16, 2, 3, 5), torch.tensor([10.0]), torch.randn(1, 4, 32))
    assert out.shape == (1, 16, 2, 3, 5)


def test_gradient_checkpointing_same_output_and_gradients():
    model = wan_from_state_dict(_random_wan_sd())
    x, t, ctx = _inputs(shape=(2, 16, 2, 4, 4), ctx_len=5)

    def run(ckpt: bool):
        model.gradient_checkpointing = ckpt
        model.zero_grad(set_to_none=True)
        xi = x.clone().requires_grad_(True)
        out = model(xi, t, ctx)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), xi.grad.clone(), {n: p.grad.clone() for n, p in model.named_parameters()}

    out0, gx0, g0 = run(False)
    out1, gx1, g1 = run(True)
    model.gradient_checkpointing = False
    assert torch.allclose(out0, out1, atol=1e-6, rtol=0)
    assert torch.allclose(gx0, gx1, atol=1e-6, rtol=0)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-5, rtol=1e-5), n
    assert any(g.abs().sum() > 0 for n, g in g0.items() if n.startswith("blocks.1."))


def test_attention_weights_are_what_forward_applies():
    """`Attention.weights` (diagnostics) against forward: o(weights @ v) is the block's output, per head."""
    cfg = WanConfig(dim=256, ffn_dim=64, num_layers=1, text_dim=32)  # 2 heads
    model = wan_from_state_dict(_random_wan_sd(cfg))
    attn = model.blocks[0].cross_attn
    x, ctx = torch.randn(2, 7, 256), torch.randn(2, 5, 256)
    with torch.no_grad():
        w = attn.weights(x, context=ctx)
        v = attn.v(ctx).view(2, 5, 2, -1).transpose(1, 2)
        by_hand = attn.o((w @ v).transpose(1, 2).reshape(2, 7, 256))
        assert w.shape == (2, 2, 7, 5) and torch.allclose(w.sum(-1), torch.ones(2, 2, 7))
        assert torch.allclose(by_hand, attn(x, context=ctx), atol=1e-5)
        assert not torch.allclose(w[:, 0], w[:, 1])  # the heads differ: the split is per head


# ---------------------------------------------------------------------------------------------
# errors: one-line SGMDError


def test_error_not_a_wan_file(tmp_path):
    sd_style = {
        "model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
        "model.diffusion_model.out.2.weight": torch.zeros(4, 320, 3, 3),
        "first_stage_model.decoder.conv_in.weight": torch.zeros(512, 4, 3, 3),
    }
    path = tmp_path / "sd15.safetensors"
    write_safetensors(path, sd_style)
    with pytest.raises(SGMDError) as e:
        load_wan(path)
    assert "not a Wan" in _one_line_error(e)


def test_error_garbage_file(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(SGMDError) as e:
        load_wan(path)
    _one_line_error(e)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(SGMDError) as e:
        load_wan(empty)
    _one_line_error(e)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_error_pickle_checkpoints_refused(tmp_path, suffix):
    path = tmp_path / f"wan{suffix}"
    torch.save(_random_wan_sd(WanConfig(dim=128, ffn_dim=128, num_layers=1, text_dim=8, freq_dim=8)), path)
    with pytest.raises(SGMDError) as e:
        load_wan(path)
    assert "safetensors" in _one_line_error(e)


def test_error_missing_file(tmp_path):
    with pytest.raises(SGMDError) as e:
        load_wan(tmp_path / "nope.safetensors")
    _one_line_error(e)


def test_error_fp8_file(tmp_path):
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("torch without float8_e4m3fn")
    sd = _random_wan_sd(WanConfig(dim=128, ffn_dim=128, num_layers=1, text_dim=8, freq_dim=8))
    fp8 = {k: (v.to(torch.float8_e4m3fn) if v.ndim == 2 else v) for k, v in sd.items()}
    path = tmp_path / "wan_fp8_e4m3fn.safetensors"
    write_safetensors(path, fp8)
    with pytest.raises(SGMDError) as e:
        load_wan(path)
    assert "fp8" in _one_line_error(e)
    # "scaled fp8" files carry an extra marker / per-tensor scales
    scaled = dict(sd, scaled_fp8=torch.zeros(0, dtype=torch.float8_e4m3fn))
    with pytest.raises(SGMDError) as e:
        wan_from_state_dict(scaled)
    _one_line_error(e)


def test_error_i2v_file(tmp_path):
    sd = _random_wan_sd(WanConfig(dim=128, ffn_dim=128, num_layers=1, text_dim=8, freq_dim=8))
    sd["img_emb.proj.0.weight"] = torch.ones(1280)
    sd["img_emb.proj.1.weight"] = torch.zeros(1280, 1280)
    sd["blocks.0.cross_attn.k_img.weight"] = torch.zeros(128, 128)
    path = tmp_path / "wan_i2v.safetensors"
    write_safetensors(path, sd)
    with pytest.raises(SGMDError) as e:
        load_wan(path)
    assert "image-to-video" in _one_line_error(e)


def test_error_dim_not_multiple_of_128():
    cfg_like = WanConfig(dim=128, ffn_dim=96, num_layers=1, text_dim=8, freq_dim=8)
    sd = _random_wan_sd(cfg_like)
    # shrink the width to 96 everywhere it appears (shapes only matter for inference)
    sd96 = {k: torch.zeros([96 if s == 128 else s for s in v.shape]) for k, v in sd.items()}
    with pytest.raises(SGMDError) as e:
        wan_from_state_dict(sd96)
    assert "128" in _one_line_error(e)
    with pytest.raises(SGMDError) as e:
        WanModel(WanConfig(dim=200))
    _one_line_error(e)


def test_error_layout_mismatch_is_one_line():
    sd = _random_wan_sd(WanConfig(dim=128, ffn_dim=128, num_layers=1, text_dim=8, freq_dim=8))
    del sd["blocks.0.cross_attn.norm_k.weight"]
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(SGMDError) as e:
        wan_from_state_dict(sd)
    _one_line_error(e)


# ---------------------------------------------------------------------------------------------
# ComfyUI's own WanModel (subprocess in ComfyUI's venv)

_COMFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    comfy_dir, weights, inputs, out_path, cfg_json = sys.argv[1:6]
    sys.path.insert(0, comfy_dir)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import comfy.ops
    import torch
    from safetensors.torch import load_file, save_file
    from comfy.ldm.wan.model import WanModel

    torch.set_num_threads(1)
    cfg = json.loads(cfg_json)
    model = WanModel(
        model_type="t2v", patch_size=tuple(cfg["patch_size"]), in_dim=cfg["in_dim"], dim=cfg["dim"],
        ffn_dim=cfg["ffn_dim"], freq_dim=cfg["freq_dim"], text_dim=cfg["text_dim"], out_dim=cfg["out_dim"],
        num_heads=cfg["dim"] // 128, num_layers=cfg["num_layers"], qk_norm=True, cross_attn_norm=True,
        eps=cfg["eps"], device=torch.device("cpu"), dtype=torch.float32,
        operations=comfy.ops.disable_weight_init,
    )
    sd = load_file(weights)
    if any(k.startswith("model.diffusion_model.") for k in sd):
        sd = {k[len("model.diffusion_model."):]: v for k, v in sd.items()}
    missing, unexpected = model.load_state_dict(sd, strict=True, assign=False)
    model.eval()
    inp = load_file(inputs)
    with torch.no_grad():
        out = model(inp["x"], inp["t"], inp["context"])
    save_file({"out": out.float().contiguous()}, out_path,
              metadata={"torch": torch.__version__, "comfy_dir": comfy_dir})
    print("ok", tuple(out.shape))
    """
)


def test_matches_comfyui_wanmodel(tmp_path):
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("set COMFYUI_DIR (and COMFYUI_PYTHON for its venv) to compare with ComfyUI's WanModel")
    if not os.path.isfile(os.path.join(comfy_dir, "comfy", "ldm", "wan", "model.py")):
        pytest.skip(f"COMFYUI_DIR={comfy_dir} has no comfy/ldm/wan/model.py")
    python = os.environ.get("COMFYUI_PYTHON") or sys.executable

    sd = _random_wan_sd(OUR_TINY, seed=7)
    weights = tmp_path / "wan_tiny.safetensors"
    write_safetensors(weights, {COMFY_PREFIX + k: v for k, v in sd.items()})  # as ComfyUI files are
    x, t, ctx = _inputs(seed=3)
    inputs = tmp_path / "inputs.safetensors"
    write_safetensors(inputs, {"x": x, "t": t, "context": ctx})
    out_path = tmp_path / "comfy_out.safetensors"
    script = tmp_path / "run_comfy_wan.py"
    script.write_text(_COMFY_SCRIPT)
    import json

    cfg_json = json.dumps(OUR_TINY.to_dict())
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [python, str(script), comfy_dir, str(weights), str(inputs), str(out_path), cfg_json],
        cwd=comfy_dir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"ComfyUI subprocess failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    tensors, meta = read_safetensors(out_path)
    want = tensors["out"]

    ours = load_wan(weights).eval()
    with torch.no_grad():
        got = ours(x, t, ctx)
    assert got.shape == want.shape
    diff = _max_diff(got, want)
    print(f"max |ours - ComfyUI| = {diff:.3e} (ComfyUI torch {meta.get('torch')}, output max {want.abs().max():.3f})")
    assert diff <= TOL_FP32


def test_rope_in_real_arithmetic_is_the_complex_rotation():
    """`apply_rope` avoids complex tensors (torch.compile cannot generate code for them); it must be
    the complex product of each channel pair with its rotation, as Wan writes it."""
    from sgmd.wan import apply_rope, rope_frequencies, rope_grid

    x = torch.randn(2, 60, 2, 128, generator=torch.Generator().manual_seed(3))
    rot = rope_grid(rope_frequencies(128), (3, 4, 5))
    want = torch.view_as_real(torch.view_as_complex(x.reshape(2, 60, 2, 64, 2)) * rot[None, :, None, :]).reshape(x.shape)
    torch.testing.assert_close(apply_rope(x, rot), want, rtol=0, atol=1e-6)
    assert apply_rope(x.bfloat16(), rot).dtype == torch.bfloat16
