"""Multi-adapter LoRA on one shared base: key names, exactness, ComfyUI export/import, merge."""
import copy

import pytest
import torch

from sgmd.errors import SGMDError
from sgmd.lora import (
    AdapterRoles,
    active_adapter,
    adapter_parameters,
    attach_lora,
    base_state_dict,
    export_adapter,
    load_adapter,
    merge_lora_state_dict,
    set_active_adapter,
)
from sgmd.wan import COMFY_PREFIX, WanConfig, WanModel
from sgmd.weights import read_safetensors, write_safetensors

CFG = WanConfig(dim=128, ffn_dim=128, num_layers=1)
RANK = 4


def tiny_wan(cfg=CFG, seed=0):
    torch.manual_seed(seed)
    return WanModel(cfg).eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 2, 4, 4, generator=g)
    t = torch.tensor([900.0, 300.0])
    ctx = torch.randn(2, 4, 4096, generator=g)
    return x, t, ctx


def randomize_ups(model, names=("generator", "fake"), seed=2):
    """Fresh adapters are exact no-ops (up = 0); tests need adapters that change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in names:
            for p in adapter_parameters(model, name)[1::2]:  # (down, up) pairs
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.fixture
def lora_model():
    model = tiny_wan()
    base = copy.deepcopy(model)
    wrapped = attach_lora(model, rank=RANK, alpha=RANK * 2.0, generator=torch.Generator().manual_seed(0))
    return model, base, wrapped


def test_targets_keys_and_freezing(lora_model):
    model, base, wrapped = lora_model
    # q, k, v, o of self- and cross-attention, ffn.0, ffn.2; nothing outside the blocks
    assert len(wrapped) == 10
    assert {"blocks.0.self_attn.q", "blocks.0.cross_attn.o", "blocks.0.ffn.0", "blocks.0.ffn.2"} <= set(wrapped)
    assert set(base_state_dict(model)) == set(base.state_dict())
    assert "blocks.0.self_attn.q.weight" in model.state_dict()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(".lora_" in k for k in missing)
    adapter = {id(p) for a in ("generator", "fake") for p in adapter_parameters(model, a)}
    assert len(adapter) == 2 * 2 * len(wrapped)
    for p in model.parameters():
        assert p.requires_grad == (id(p) in adapter)


def test_adapters_off_and_fresh_adapter_equal_base(lora_model):
    model, base, _ = lora_model
    x, t, ctx = inputs()
    with torch.no_grad():
        ref = base(x, t, ctx)
        with active_adapter(model, "generator"):  # freshly attached: up = 0
            assert torch.equal(model(x, t, ctx), ref)
        randomize_ups(model)
        assert torch.equal(model(x, t, ctx), ref)  # no adapter active = the teacher, bit-exact
        with active_adapter(model, "generator"):
            gen = model(x, t, ctx)
        with active_adapter(model, "fake"):
            fake = model(x, t, ctx)
    assert (gen - ref).abs().max() > 1e-4 and (fake - gen).abs().max() > 1e-4


def test_active_adapter_selection(lora_model):
    model, _, _ = lora_model
    with pytest.raises(SGMDError):
        set_active_adapter(model, "student")
    with active_adapter(model, "fake"):
        with active_adapter(model, None):
            assert model.lora_state.active is None
        assert model.lora_state.active == "fake"
    assert model.lora_state.active is None
    with pytest.raises(SGMDError):
        attach_lora(model, adapters=("fake",))  # name taken


def test_export_format_and_load_onto_fresh_base(lora_model, tmp_path):
    model, base, wrapped = lora_model
    randomize_ups(model)
    x, t, ctx = inputs()
    with torch.no_grad(), active_adapter(model, "generator"):
        want = model(x, t, ctx)
    tensors = export_adapter(model, "generator")
    assert len(tensors) == 3 * len(wrapped)
    q = "diffusion_model.blocks.0.self_attn.q"
    assert tensors[f"{q}.lora_down.weight"].shape == (RANK, CFG.dim)
    assert tensors[f"{q}.lora_up.weight"].shape == (CFG.dim, RANK)
    assert tensors[f"{q}.alpha"].ndim == 0 and float(tensors[f"{q}.alpha"]) == RANK * 2.0
    path = tmp_path / "gen_lora.safetensors"
    write_safetensors(str(path), tensors)
    loaded, _ = read_safetensors(str(path))

    fresh = copy.deepcopy(base)
    assert sorted(load_adapter(fresh, "generator", loaded)) == sorted(wrapped)
    with torch.no_grad(), active_adapter(fresh, "generator"):
        got = fresh(x, t, ctx)
    assert (got - want).abs().max() <= 1e-5

    # PEFT spellings, no prefix
    alias = {k.replace("diffusion_model.", "").replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v
             for k, v in tensors.items()}
    other = copy.deepcopy(base)
    load_adapter(other, "generator", alias)
    with torch.no_grad(), active_adapter(other, "generator"):
        assert (other(x, t, ctx) - want).abs().max() <= 1e-5


def test_load_into_existing_adapter_keeps_parameters(lora_model):
    model, _, _ = lora_model
    randomize_ups(model)
    params = adapter_parameters(model, "fake")
    load_adapter(model, "fake", export_adapter(model, "generator"))
    assert all(a is b for a, b in zip(params, adapter_parameters(model, "fake")))  # optimizer stays valid
    for a, b in zip(adapter_parameters(model, "fake"), adapter_parameters(model, "generator")):
        assert torch.equal(a, b)


def test_merge_gives_plain_wan_with_same_output(lora_model):
    model, base, _ = lora_model
    randomize_ups(model)
    x, t, ctx = inputs()
    with torch.no_grad(), active_adapter(model, "generator"):
        want = model(x, t, ctx)
    merged = merge_lora_state_dict(base_state_dict(model), export_adapter(model, "generator"))
    plain = WanModel(CFG)
    plain.load_state_dict(merged, strict=True)
    with torch.no_grad():
        assert (plain(x, t, ctx) - want).abs().max() <= 1e-5
    # ComfyUI-prefixed base keys keep their prefix
    prefixed = {COMFY_PREFIX + k: v for k, v in base_state_dict(model).items()}
    merged2 = merge_lora_state_dict(prefixed, export_adapter(model, "generator"))
    key = COMFY_PREFIX + "blocks.0.ffn.0.weight"
    assert torch.equal(merged2[key], merged["blocks.0.ffn.0.weight"])
    # strength 0 leaves the base untouched
    zero = merge_lora_state_dict(base.state_dict(), export_adapter(model, "generator"), strength=0.0)
    assert torch.equal(zero["blocks.0.self_attn.q.weight"], base.state_dict()["blocks.0.self_attn.q.weight"])


def test_lora_for_another_model_is_rejected(lora_model):
    model, base, _ = lora_model
    big = tiny_wan(WanConfig(dim=256, ffn_dim=128, num_layers=1))
    attach_lora(big, adapters=("generator",), rank=RANK)
    foreign = export_adapter(big, "generator")
    for target in (copy.deepcopy(base), model):
        with pytest.raises(SGMDError, match="different model size") as e:
            load_adapter(target, "generator", foreign)
        assert "\n" not in str(e.value)
    with pytest.raises(SGMDError, match="different model size"):
        merge_lora_state_dict(base.state_dict(), foreign)
    bad = dict(export_adapter(model, "generator"))
    bad["diffusion_model.blocks.7.self_attn.q.lora_down.weight"] = torch.zeros(RANK, CFG.dim)
    bad["diffusion_model.blocks.7.self_attn.q.lora_up.weight"] = torch.zeros(CFG.dim, RANK)
    before = [p.clone() for p in adapter_parameters(model, "generator")]
    with pytest.raises(SGMDError, match="does not exist"):
        load_adapter(model, "generator", bad)
    assert all(torch.equal(a, b) for a, b in zip(before, adapter_parameters(model, "generator")))  # nothing half-loaded
    with pytest.raises(SGMDError, match="unsupported LoRA key"):
        load_adapter(model, "generator", {"diffusion_model.blocks.0.self_attn.q.diff": torch.zeros(1)})


def test_gradient_checkpointing_recomputes_with_the_right_adapter(lora_model):
    """Generator pass, then fake pass on its output, backward with no adapter active: the
    checkpoint recompute must still use each block's original adapter."""
    model, _, _ = lora_model
    randomize_ups(model)
    roles = AdapterRoles(model)
    x, _, ctx = inputs()
    s = torch.tensor([0.8, 0.4])

    def grads(checkpointing):
        model.gradient_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_(True)
        v = roles.generator(xg, s, ctx)
        out = roles.fake(xg - v, s, ctx)
        out.square().mean().backward()
        return [p.grad.clone() for a in ("generator", "fake") for p in adapter_parameters(model, a)] + [xg.grad]

    plain, ckpt = grads(False), grads(True)
    model.gradient_checkpointing = False
    for a, b in zip(plain, ckpt):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# ---- merging an adapter into the base weight for a call (a speed path; the same function) ----

def _layer_with_adapter(rank, in_f=128, out_f=128, seed=3):
    from sgmd.lora import LoRALinear, _LoraState

    g = torch.Generator().manual_seed(seed)
    state = _LoraState()
    layer = LoRALinear(torch.nn.Linear(in_f, out_f), state)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    layer.add_adapter("generator", rank, alpha=rank / 2, generator=g)
    with torch.no_grad():
        layer.lora_up["generator"].normal_(0, 0.1, generator=g)
    state.adapters.append("generator")
    state.active = "generator"
    return layer


@pytest.fixture
def merges(monkeypatch):
    """The merged calls so far: the merged path builds its weight with one `torch.addmm`."""
    calls = []
    real = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def _run(layer, x, merge, merges):
    """Output and the gradients of x, down and up of one call, and how many merged calls it made."""
    from sgmd.lora import merging

    before = len(merges)
    x = x.clone().requires_grad_(True)
    with merging(merge):
        y = layer(x)
    (y * torch.linspace(-1, 1, y.shape[-1])).sum().backward()
    down, up = layer.lora_down["generator"], layer.lora_up["generator"]
    out = (y.detach(), x.grad, down.grad.clone(), up.grad.clone(), len(merges) - before)
    down.grad, up.grad = None, None
    return out


def test_merged_adapter_call_matches_the_unmerged_one_with_its_gradients(merges):
    layer = _layer_with_adapter(rank=64)
    x = torch.randn(4, 512, 128, generator=torch.Generator().manual_seed(5))
    merged = _run(layer, x, True, merges)
    plain = _run(layer, x, False, merges)
    assert merged[-1] == 1 and plain[-1] == 0  # the first really took the merged path
    # both against the same call in float64: the LoRA factors' gradients sum over 2048 tokens and reach ~100,
    # so float32 rounding alone moves them by ~1e-5 of their scale (differently with each CPU's kernels)
    exact = _run(layer.double(), x.double(), False, merges)
    layer.float()
    for a, b, ref in zip(merged[:4], plain[:4], exact[:4]):
        for got in (a, b):
            torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # and both are the closed form y = x (W + alpha/r up down)^T + b
    w = layer.weight + 0.5 * layer.lora_up["generator"] @ layer.lora_down["generator"]
    torch.testing.assert_close(merged[0], (x @ w.T + layer.bias).detach(), rtol=1e-4, atol=1e-5)


def test_merging_is_skipped_where_it_does_not_pay_or_would_round_the_delta(merges):
    x = torch.randn(2, 512, 128, generator=torch.Generator().manual_seed(6))
    # a low rank against the width with adapter gradients: the unmerged path is cheaper
    assert _run(_layer_with_adapter(rank=8), x, True, merges)[-1] == 0
    # ...but a no-grad call (a rollout) merges at any rank
    with torch.no_grad():
        _layer_with_adapter(rank=8)(x)
    assert merges == [1]
    merges.clear()
    # bf16 autocast: W + dW in bf16 would round a small delta away; never merged
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _layer_with_adapter(rank=64)(x)
    assert merges == []


def test_merge_pays_counts_multiply_adds():
    from sgmd.lora import merge_pays

    # the tiny teacher's rank 64 of width 128 with adapter gradients: 4 r (i + o) = 65536 > i o = 16384
    assert merge_pays(128, 128, 64, tokens=2048, param_grads=True)
    # Wan 1.3B's rank 64 of width 1536: 786432 < 2359296, unmerged is cheaper when training the adapter
    assert not merge_pays(1536, 1536, 64, tokens=32760, param_grads=True)
    assert merge_pays(1536, 1536, 64, tokens=32760, param_grads=False)
    # too few tokens to pay for building the i x o weight: tokens (i + o) <= i o
    assert not merge_pays(128, 128, 64, tokens=64, param_grads=False)
    assert merge_pays(128, 128, 64, tokens=65, param_grads=False)
