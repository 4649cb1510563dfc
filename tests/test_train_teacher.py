"""The tiny-teacher trainer: a short run writes a Wan-format file that our loader (and so ComfyUI's
UNETLoader, same keys) reads, with its recipe in the metadata; a resumed run equals a straight one."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training"))
import train_teacher  # noqa: E402

from sgmd import toyvideo  # noqa: E402
from sgmd.errors import SGMDError  # noqa: E402
from sgmd.metrics import mass_centres  # noqa: E402
from sgmd.weights import load_wan, read_safetensors  # noqa: E402


def _run(tmp_path, name, *args):
    out = str(tmp_path / f"{name}.safetensors")
    assert train_teacher.main(["--batch-size", "2", "--out", out, "--checkpoint", str(tmp_path / f"{name}.ckpt.safetensors"),
                               "--threads", "1", *args]) == 0
    return out


def test_short_run_writes_a_loadable_teacher_with_its_recipe(tmp_path):
    out = _run(tmp_path, "t", "--steps", "2")
    model = load_wan(out)
    assert model.cfg == train_teacher.TINY_CONFIG
    _, meta = read_safetensors(out)
    recipe = json.loads(meta["sgmd_teacher"])
    assert recipe["steps"] == 2 and recipe["task"] == "sgmd-toyvideo-v1" and recipe["codec"] == "sgmd-toy-codec-v2" and recipe["config"]["dim"] == 128


def test_resume_continues_exactly(tmp_path):
    straight = _run(tmp_path, "a", "--steps", "3")
    _run(tmp_path, "b", "--steps", "2", "--checkpoint-every", "1")
    resumed = _run(tmp_path, "b", "--steps", "3")
    a, _ = read_safetensors(straight)
    b, _ = read_safetensors(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_under_another_recipe_is_a_one_line_error(tmp_path):
    """A checkpoint resumes only under the recipe it was trained with (its length, files and pacing
    may change): another rate or data mix is refused by name, before anything is loaded or written."""
    _run(tmp_path, "r", "--steps", "1", "--lr-text-in", "3e-5")
    ckpt = tmp_path / "r.ckpt.safetensors"
    before = ckpt.read_bytes()
    cases = [(["--lr-text-in", "1e-4"], r"with --lr-text-in 3e-05 \(now 0.0001\); pass"),
             (["--lr-text-in", "3e-5", "--leave-out-direction", "0.5"], r"with --leave-out-direction 0.3 \(now 0.5\); pass"),
             (["--lr-text-in", "3e-5", "--dtype", "bf16"], r"with --dtype fp32 \(now bf16\); pass"),
             ([], r"with --lr-text-in 3e-05 \(now 0.001\); pass")]  # the default rate is another rate
    for extra, message in cases:
        with pytest.raises(SGMDError, match=message):
            _run(tmp_path, "r", "--steps", "2", *extra)
    assert ckpt.read_bytes() == before
    _run(tmp_path, "r", "--steps", "2", "--lr-text-in", "3e-5", "--max-minutes", "5", "--checkpoint-every", "7")


def test_motion_word_probe_measures_exactly_the_use_of_the_text():
    """The probe is the loss rise when a motion word is swapped: exactly zero for a model whose
    cross-attention is cut, non-zero once the text reaches the output."""
    from sgmd.wan import WanConfig, WanModel

    torch.manual_seed(0)
    model = WanModel(WanConfig(dim=128, ffn_dim=128, num_layers=1)).eval()
    torch.nn.init.normal_(model.head.head.weight, std=0.02)  # a non-trivial output
    with torch.no_grad():  # and a text path strong enough to move a float32 loss
        for block in model.blocks:
            block.cross_attn.o.weight.mul_(30)
    with_text = train_teacher.motion_word_probe(model, n=4, sigmas=(0.7,))
    assert abs(with_text["direction"]) > 1e-6 and abs(with_text["speed"]) > 1e-6
    with torch.no_grad():
        for block in model.blocks:
            block.cross_attn.o.weight.zero_()
            block.cross_attn.o.bias.zero_()
    cut = train_teacher.motion_word_probe(model, n=4, sigmas=(0.7,))
    assert cut == {"direction": 0.0, "speed": 0.0}


def test_word_attention_reads_the_softmax_weights():
    """Queries cut to zero give every one of the 16 tokens exactly 1/16; keys that single out the
    direction word's embedding give it (almost) all the weight."""
    from sgmd import text
    from sgmd.wan import WanConfig, WanModel

    torch.manual_seed(0)
    model = WanModel(WanConfig(dim=128, ffn_dim=128, num_layers=2)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.cross_attn.q.weight.zero_()
            block.cross_attn.q.bias.zero_()
    flat = train_teacher.word_attention(model, n=4)
    assert all(abs(w - 1 / text.MAX_TOKENS) < 1e-6 for ws in flat.values() for w in ws) and len(flat["speed"]) == 2
    # block 0 only: a constant query along the key of "left"/"right"/"up"/"down" and nothing else
    block = model.blocks[0].cross_attn
    with torch.no_grad():
        model.text_embedding[0].weight.zero_(), model.text_embedding[0].bias.zero_()
        dirs = torch.stack([text.word_vector(w) for w in ("left", "right", "up", "down")]).sum(0)
        model.text_embedding[0].weight[0] = dirs / dirs.norm() ** 2 * 50
        model.text_embedding[2].weight.zero_(), model.text_embedding[2].bias.zero_()
        model.text_embedding[2].weight[0, 0] = 1.0
        block.k.weight.zero_(), block.k.bias.fill_(0.01)
        block.k.weight[0, 0] = 1.0
        block.q.bias.fill_(-0.01)
        block.q.bias[0] = 1.0
    focused = train_teacher.word_attention(model, n=4)
    assert focused["direction"][0] > 0.9 and focused["speed"][0] < 0.05


def test_architecture_options_reach_the_file(tmp_path, capsys):
    out = _run(tmp_path, "w", "--steps", "1", "--dim", "256", "--ffn-dim", "256", "--layers", "1", "--sigma-shift", "2",
               "--probe-every", "1")
    printed = capsys.readouterr().out
    assert "distance to the exact denoiser" in printed and "share of the exact denoiser's word use" in printed
    assert load_wan(out).cfg.num_heads == 2
    recipe = json.loads(read_safetensors(out)[1]["sgmd_teacher"])
    assert recipe["config"]["num_layers"] == 1 and recipe["train_sigma_shift"] == 2.0


def test_lr_cycles_reproduce_a_run_extended_by_resuming(tmp_path):
    """The v2 teacher ran 2000 steps, then was resumed to 3300: `--lr-cycles` makes that one command."""
    cycles = train_teacher.parse_cycles("2000", 3300)
    assert cycles == [2000, 3300]
    for step in (0, 150, 1999):
        assert train_teacher.cycled_lr(step, cycles, 1e-3) == train_teacher.lr_at(step, 2000, 1e-3)
    for step in (2000, 3299):
        assert train_teacher.cycled_lr(step, cycles, 1e-3) == train_teacher.lr_at(step, 3300, 1e-3)
    assert train_teacher.cycled_lr(2000, cycles, 1e-3) > train_teacher.cycled_lr(1999, cycles, 1e-3)  # the warm restart
    straight = _run(tmp_path, "s", "--steps", "3", "--lr-cycles", "2")
    _run(tmp_path, "x", "--steps", "2")
    extended = _run(tmp_path, "x", "--steps", "3", "--lr-cycles", "2")
    a, b = read_safetensors(straight)[0], read_safetensors(extended)[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    assert json.loads(read_safetensors(straight)[1]["sgmd_teacher"])["lr_cycles"] == [2, 3]


def test_bad_lr_cycles_is_a_one_line_error():
    for bad in ("2000,1000", "abc", "0"):
        with pytest.raises(SGMDError, match="--lr-cycles"):
            train_teacher.parse_cycles(bad, 3300)


# Options the recipe refuses before any training or file. The contrasts and `--exact-weight` act on the
# exact-target clips only: asked for without them, a run would train as if they were off.
BAD_OPTIONS = [
    (["--word-contrast", "1", "--exact-target-from", "0"], "--word-contrast"),
    (["--word-contrast", "-1"], "--word-contrast"),
    (["--word-contrast-on", "direction"], "--word-contrast"),
    (["--contrast-swap", "drop"], "--contrast-swap"),
    (["--exact-weight", "3", "--exact-target-from", "0"], "--exact-weight"),
    (["--exact-weight", "0"], "--exact-weight"),
    (["--exact-weight", "-1"], "--exact-weight"),
    (["--noise-contrast", "1", "--exact-target-from", "0"], "--noise-contrast"),
    (["--noise-contrast", "-1"], "--noise-contrast"),
    (["--noise-contrast-on", "no-direction"], "--noise-contrast"),
    (["--sampled-states", "0.5", "--exact-target-from", "0"], "--sampled-states"),
    (["--sampled-states", "1.5"], "--sampled-states"),
    (["--sampled-states", "-0.1"], "--sampled-states"),
    (["--short-travel", "0.5", "--exact-target-from", "0"], "--short-travel"),
    (["--short-travel", "1.5"], "--short-travel"),
    (["--short-travel", "0.5", "--sampled-states", "0.5"], "--short-travel"),
    (["--short-travel-from", "0.5"], "--short-travel-from"),
    (["--short-travel", "0.5", "--short-travel-from", "0.95"], "--short-travel-from"),
    (["--short-travel", "0.5", "--short-travel-from", "-0.1"], "--short-travel-from"),
    (["--short-contrast", "1"], "--short-contrast"),
    (["--short-travel", "0.5", "--short-contrast", "-1"], "--short-contrast"),
]


@pytest.mark.parametrize("bad,match", BAD_OPTIONS)
def test_bad_recipe_options_are_a_one_line_error(tmp_path, bad, match):
    out = tmp_path / "t.safetensors"
    with pytest.raises(SGMDError, match=match):
        train_teacher.main([*bad, "--steps", "1", "--out", str(out), "--checkpoint", str(tmp_path / "c.safetensors")])
    assert not out.exists()


class _ExactModel:
    """The task's exact denoiser behind the model call signature: it reads the prompt back from the
    text embedding (the toy encoder is deterministic) and the noise level from the timestep."""

    def __init__(self, prompts, codec_id=train_teacher.codec.CODEC_V2):
        from sgmd import text

        self.known = [(text.encode_text([p])[0], p) for p in prompts]
        self.codec_id = codec_id

    def __call__(self, x, t, ctx):
        prompts = [next(p for e, p in self.known if torch.equal(e, c)) for c in ctx]
        return train_teacher.exact_velocity(x, t / 1000, prompts, codec_id=self.codec_id)


def test_word_use_is_whole_for_the_exact_denoiser_and_nil_without_text():
    _, prompts, _ = train_teacher._specified_clips(8, 1)  # both speed words among them
    candidates = prompts + [change(p, kind) for p in prompts for kind in train_teacher._WORD_INDEX
                            for change in (toyvideo.with_opposite, toyvideo.without)]
    for drop in (False, True):
        use = train_teacher.word_use(_ExactModel(candidates), n=8, drop=drop)
        assert set(use) == ({"direction", "slowly", "quickly"} if drop else {"direction", "speed"})
        for model_rise, exact_rise in use.values():
            assert exact_rise > (5e-4 if drop else 0.01)  # the word matters at sigma 0.95 (less against its absence)
            assert abs(model_rise / exact_rise - 1) < 1e-4

    class Blind(_ExactModel):  # the exact denoiser of the unconditional law: ignores the prompt
        def __call__(self, x, t, ctx):
            return train_teacher.exact_velocity(x, t / 1000, [""] * len(ctx))

    assert all(m == 0.0 and e > 0.01 for m, e in train_teacher.word_use(Blind(candidates), n=8).values())
    assert all(m == 0.0 and e > 5e-4 for m, e in train_teacher.word_use(Blind(candidates), n=8, drop=True).values())


def test_lr_text_sets_the_text_path_apart(tmp_path):
    """`--lr-text 0` freezes exactly the text embedding and the cross-attention (AdamW's decay is
    scaled by the lr too), while the rest trains; and the recipe records it."""
    from sgmd.wan import WanModel

    torch.manual_seed(0)  # the run's seed: the same initial weights
    init = {k: v.clone() for k, v in WanModel(train_teacher.TINY_CONFIG).state_dict().items()}
    out = _run(tmp_path, "t", "--steps", "2", "--lr-text", "0")
    state, _ = read_safetensors(str(tmp_path / "t.ckpt.safetensors"))
    text_keys = [k for k in init if train_teacher.is_text_path(k)]
    assert any(k.startswith("text_embedding.") for k in text_keys) and any(".cross_attn.q." in k for k in text_keys)
    for k in text_keys:
        torch.testing.assert_close(state["model." + k], init[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(state["model.blocks.0.self_attn.q.weight"], init["blocks.0.self_attn.q.weight"])
    assert json.loads(read_safetensors(out)[1]["sgmd_teacher"])["lr_text"] == 0.0


def test_lr_text_in_sets_the_input_projection_apart(tmp_path):
    """`--lr-text-in 0` freezes the text embedding's 4096 -> dim projection alone: the rest of the
    text path and the other layers train; without it the projection follows `--lr-text`."""
    from sgmd.wan import WanModel

    torch.manual_seed(0)
    init = {k: v.clone() for k, v in WanModel(train_teacher.TINY_CONFIG).state_dict().items()}
    out = _run(tmp_path, "t", "--steps", "2", "--lr-text-in", "0")
    state, _ = read_safetensors(str(tmp_path / "t.ckpt.safetensors"))
    torch.testing.assert_close(state["model." + train_teacher.TEXT_IN], init[train_teacher.TEXT_IN], rtol=0, atol=0)
    for k in ("text_embedding.0.bias", "text_embedding.2.weight", "blocks.0.cross_attn.k.weight", "blocks.0.self_attn.q.weight"):
        assert not torch.equal(state["model." + k], init[k]), k
    assert json.loads(read_safetensors(out)[1]["sgmd_teacher"])["lr_text_in"] == 0.0
    default = train_teacher.param_groups(WanModel(train_teacher.TINY_CONFIG), 3e-3, 1e-3)
    assert [g["lr_scale"] for g in default] == pytest.approx([1.0, 1 / 3])  # v11's two groups, unchanged
    assert [g["lr_scale"] for g in train_teacher.param_groups(WanModel(train_teacher.TINY_CONFIG), 1e-3, 1e-3)] == [1.0]
    with pytest.raises(SGMDError, match="--lr-text-in"):
        train_teacher.main(["--lr-text-in", "-1", "--out", str(tmp_path / "x.safetensors")])


def test_leave_out_direction_sets_the_share_of_direction_free_prompts(tmp_path):
    """`--leave-out-direction p`: a share p of the drawn prompts name no direction (binomial, 4000
    draws: within 3 standard deviations), the speed is still left out at `LEAVE_OUT`; the value
    reaches the recipe and one outside [0, 1) is a one-line error."""
    n = 4000
    for p in (0.0, 0.5, 0.9):
        g = torch.Generator().manual_seed(1)
        ps = [toyvideo.random_prompt(g, leave_out_direction=p) for _ in range(n)]
        tol = 3 * (p * (1 - p) / n) ** 0.5 + 1e-9
        assert abs(sum(q.direction is None for q in ps) / n - p) <= tol, p
        assert abs(sum(q.speed is None for q in ps) / n - toyvideo.LEAVE_OUT) <= 3 * (0.21 / n) ** 0.5, p
    out = _run(tmp_path, "t", "--steps", "1", "--leave-out-direction", "0.5")
    assert json.loads(read_safetensors(out)[1]["sgmd_teacher"])["leave_out_direction"] == 0.5
    for bad in ("-0.1", "1"):
        with pytest.raises(SGMDError, match="--leave-out-direction"):
            train_teacher.main(["--leave-out-direction", bad, "--out", str(tmp_path / "x.safetensors")])


def test_the_step_encodes_clips_and_targets_in_the_chosen_codec():
    """With codec v3 the clips, the shortened clips and the exact targets are all v3: the v3 exact
    denoiser scores zero on every exact-target clip and the v2 one does not; and the file records it."""
    codec = train_teacher.codec
    prompts, frames, clips = toyvideo.make_batch(6, torch.Generator().manual_seed(0))
    both = prompts + [""] + [toyvideo.without(p, "speed") for p in prompts]

    def loss(model):
        g = torch.Generator().manual_seed(1)
        return float(train_teacher.flow_matching_step(model, frames, prompts, g, 1.0, 1e-6, short_travel=0.5,
                                                      clips=clips, short_contrast=1.0, codec_id=codec.CODEC_V3))

    assert loss(_ExactModel(both, codec.CODEC_V3)) < 1e-8
    assert loss(_ExactModel(both, codec.CODEC_V2)) > 1e-2


def test_codec_option_is_recorded_in_the_file(tmp_path):
    out = _run(tmp_path, "v3", "--steps", "1", "--codec", "v3")
    assert json.loads(read_safetensors(out)[1]["sgmd_teacher"])["codec"] == "sgmd-toy-codec-v3"


def test_exact_target_replaces_the_spread_from_its_noise_level_up():
    """`exact_from`: clips noised at or above it regress onto the exact velocity, so the exact
    denoiser scores zero there; below it (and with the option off) the target is `eps - x0`, whose
    spread the exact denoiser cannot fit."""
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(8, torch.Generator().manual_seed(0))
    model = _ExactModel(prompts + [""])

    def loss(exact_from):
        g = torch.Generator().manual_seed(1)
        return float(train_teacher.flow_matching_step(model, frames, prompts, g, 1.0, exact_from))

    assert loss(1e-6) < 1e-8  # every clip on the exact target
    off = loss(0.0)
    assert off > 1e-3
    # Replay the step's draws: with the option at 0.5, only the clips below 0.5 keep their spread.
    sigma, x0, eps, used, _ = _replay_step_draws(frames, prompts)
    v = train_teacher.exact_velocity(noised(x0, eps, sigma), sigma, used)
    per_clip = (v - (eps - x0)).pow(2).flatten(1).mean(1)
    low = sigma < 0.5
    assert 0 < int(low.sum()) < 8
    torch.testing.assert_close(loss(0.5), float(per_clip[low].sum() / 8), rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(off, float(per_clip.mean()), rtol=1e-5, atol=1e-8)


def _replay_step_draws(frames, prompts, seed: int = 1):
    """The draws `flow_matching_step` makes from a generator seeded `seed` at training shift 1 (CFG
    dropout, noise level, noise), in its order, and the generator after them: what a test needs to
    recompute the loss by hand."""
    from sgmd.schedules import warp

    g = torch.Generator().manual_seed(seed)
    drop = torch.rand(len(prompts), generator=g) < train_teacher.CFG_DROPOUT
    sigma = warp(torch.rand(len(prompts), generator=g), 1.0)
    x0 = train_teacher.codec.encode(frames)
    eps = torch.randn(x0.shape, generator=g)
    return sigma, x0, eps, ["" if d else p for p, d in zip(prompts, drop.tolist())], g


def test_motion_swap_prefers_the_speed_word():
    assert train_teacher.motion_swap("a red circle moving left slowly") == "a red circle moving left quickly"
    assert train_teacher.motion_swap("a red circle moving up") == "a red circle moving down"
    assert train_teacher.motion_swap("a blue square moving quickly") == "a blue square moving slowly"
    assert train_teacher.motion_swap("a red circle") is None
    assert train_teacher.motion_swap("") is None
    # drop: the word goes, and "moving" with it when nothing is left to move (the grammar's form)
    assert train_teacher.motion_swap("a red circle moving left slowly", drop=True) == "a red circle moving left"
    assert train_teacher.motion_swap("a red circle moving up", drop=True) == "a red circle"
    assert train_teacher.motion_swap("a blue square moving quickly", drop=True) == "a blue square"
    assert train_teacher.motion_swap("", drop=True) is None


def test_without_leaves_the_attribute_random_in_the_grammar():
    for p in toyvideo.all_prompts():
        for kind in ("direction", "speed"):
            out = toyvideo.Prompt.parse(toyvideo.without(p.text, kind))
            assert getattr(out, kind) is None
            assert out == toyvideo.Prompt(**{**p.__dict__, kind: None})
            assert toyvideo.without(p.text, kind) == out.text  # a prompt of the data, not a new string


@pytest.mark.parametrize("swap,on", [(s, "all") for s in train_teacher.CONTRAST_SWAPS] + [("opposite", "direction")])
def test_word_contrast_adds_the_error_of_the_words_effect(swap, on):
    """The exact denoiser scores zero with the contrast on; a prompt-blind exact denoiser (right on
    average, no word effect) is charged exactly the mean square of the exact word effect on the
    swappable clips, recomputed here from the step's replayed draws (for `either`, the per-clip
    coin drawn after them); with `on="direction"`, only on those whose prompt names a direction."""
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(12, torch.Generator().manual_seed(0))
    swaps = [train_teacher.motion_swap(p, d) for p in prompts for d in (False, True)]
    known = prompts + [s for s in swaps if s] + [""]

    def loss(model, w, exact_from=1e-6):
        g = torch.Generator().manual_seed(1)
        return float(train_teacher.flow_matching_step(model, frames, prompts, g, 1.0, exact_from, w, swap,
                                                      word_contrast_on=on))

    assert loss(_ExactModel(known), 3.0) < 1e-8

    class Blind(_ExactModel):
        def __call__(self, x, t, ctx):
            return train_teacher.exact_velocity(x, t / 1000, [""] * len(ctx))

    sigma, x0, eps, used, g = _replay_step_draws(frames, prompts)
    high = (sigma >= 0.5).nonzero().flatten().tolist()
    if on == "direction":
        named = [i for i in high if toyvideo.Prompt.parse(used[i]).direction]
        assert named and any(train_teacher.motion_swap(used[i]) for i in high if i not in named)  # the choice shows
        high = named
    drops = (torch.rand(len(high), generator=g) < 0.5).tolist() if swap == "either" else [swap == "drop"] * len(high)
    if swap == "either":
        assert 0 < sum(drops) < len(drops)  # both kinds of swap in this batch
    swapped = {i: train_teacher.motion_swap(used[i], d) for i, d in zip(high, drops)}
    keep = [i for i in high if swapped[i]]
    assert 0 < len(keep) < 12  # some clips below 0.5 or unswappable: the term must skip them
    x_s = noised(x0[keep], eps[keep], sigma[keep])
    effect = (train_teacher.exact_velocity(x_s, sigma[keep], [used[i] for i in keep])
              - train_teacher.exact_velocity(x_s, sigma[keep], [swapped[i] for i in keep]))
    blind = Blind(known)
    torch.testing.assert_close(loss(blind, 2.0, 0.5) - loss(blind, 0.0, 0.5), 2.0 * float(effect.pow(2).mean()),
                               rtol=1e-4, atol=1e-8)


def test_exact_weight_multiplies_the_error_of_the_exact_target_clips_only():
    """`exact_weight` K: the loss is the mean over clips of each clip's squared error, times K for the
    clips on the exact target (sigma >= exact_from), recomputed here from the step's replayed draws;
    K = 1 is the plain loss, and the option draws nothing."""
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(8, torch.Generator().manual_seed(0))

    def zero(x, t, ctx):  # an error on every clip: the squared target itself
        return torch.zeros_like(x)

    def loss(k):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(zero, frames, prompts, g, 1.0, 0.5, exact_weight=k))
        return out, torch.rand(1, generator=g)

    sigma, x0, eps, used, _ = _replay_step_draws(frames, prompts)
    x_s = noised(x0, eps, sigma)
    high = sigma >= 0.5
    assert 0 < int(high.sum()) < 8
    target = torch.where(high[:, None, None, None, None], train_teacher.exact_velocity(x_s, sigma, used), eps - x0)
    per_clip = target.pow(2).flatten(1).mean(1)
    plain, after_plain = loss(1.0)
    torch.testing.assert_close(plain, float(per_clip.mean()), rtol=1e-5, atol=1e-8)
    for k in (0.5, 3.0):
        weighted, after = loss(k)
        expected = float((per_clip * torch.where(high, k, 1.0)).mean())
        torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-8)
        assert torch.equal(after, after_plain)  # the same draws as without the option
    assert loss(3.0)[0] > plain * 1.05  # the weight is not lost on the way


@pytest.mark.parametrize("on", ["all", "no-direction"])
def test_noise_contrast_adds_the_error_of_the_velocitys_change_with_the_noise(on):
    """The exact denoiser scores zero with the noise contrast on. A model that outputs zero is charged,
    on top of the plain loss, K times the mean square of how the exact velocity changes between each
    re-noised clip's noise and a second draw made after the step's own (replayed here). Only the
    exact-target clips are re-noised, and with `on="no-direction"` only those of them whose prompt names
    no direction; off, the option draws nothing."""
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(10, torch.Generator().manual_seed(0))

    def loss(model, k, exact_from):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(model, frames, prompts, g, 1.0, exact_from, noise_contrast=k,
                                                     noise_contrast_on=on))
        return out, torch.rand(1, generator=g)

    assert loss(_ExactModel(prompts + [""]), 2.0, 1e-6)[0] < 1e-8

    def zero(x, t, ctx):
        return torch.zeros_like(x)

    sigma, x0, eps, used, g = _replay_step_draws(frames, prompts)
    high = (sigma >= 0.5).nonzero().flatten().tolist()
    assert 0 < len(high) < 10  # the clips below 0.5 must be left alone
    free = [i for i in high if " left" not in used[i] and " right" not in used[i] and " up" not in used[i]
            and " down" not in used[i]]
    assert 0 < len(free) < len(high)  # both kinds among the exact-target clips, so the choice shows
    rn = high if on == "all" else free
    eps2 = torch.randn((len(rn), *x0.shape[1:]), generator=g)
    ps = [used[i] for i in rn]
    change = (train_teacher.exact_velocity(noised(x0[rn], eps[rn], sigma[rn]), sigma[rn], ps)
              - train_teacher.exact_velocity(noised(x0[rn], eps2, sigma[rn]), sigma[rn], ps))
    plain, after_plain = loss(zero, 0.0, 0.5)
    with_term, _ = loss(zero, 3.0, 0.5)
    torch.testing.assert_close(with_term - plain, 3.0 * float(change.pow(2).mean()), rtol=1e-4, atol=1e-8)
    assert with_term > plain * 1.05
    g_plain = _replay_step_draws(frames, prompts)[-1]
    assert torch.equal(after_plain, torch.rand(1, generator=g_plain))  # off, nothing more is drawn


def _tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    model = train_teacher.WanModel(train_teacher.WanConfig(dim=128, ffn_dim=128, num_layers=1))
    x, ctx = torch.randn(2, 16, 2, 4, 4), torch.randn(2, 3, 4096)
    return model, x, torch.tensor([900.0, 300.0]), ctx


def test_bf16_training_forward_computes_in_bf16_and_keeps_fp32_weights_and_grads():
    """bf16 is autocast: the velocity comes back fp32, off the fp32 one by bf16's rounding (not 0,
    not more than a few per cent), and the gradients land on the fp32 master weights."""
    model, x, t, ctx = _tiny_model()
    torch.nn.init.normal_(model.head.head.weight, std=0.05)  # a zero head would hide the rounding
    want = model(x, t, ctx)
    got = train_teacher.training_forward(model, "bf16")(x, t, ctx)
    assert got.dtype == torch.float32
    rel = ((got - want).norm() / want.norm()).item()
    assert 1e-4 < rel < 3e-2
    got.pow(2).mean().backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in model.parameters() if p.requires_grad)


def test_compiled_training_forward_matches_eager_values_and_gradients():
    model, x, t, ctx = _tiny_model(1)
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    eager = train_teacher.training_forward(model)(x, t, ctx)
    eager.pow(2).mean().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    got = train_teacher.training_forward(model, compile_=True)(x, t, ctx)
    torch.testing.assert_close(got, eager, rtol=1e-4, atol=1e-5)
    got.pow(2).mean().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-3, atol=1e-6, msg=n)


def test_compute_options_reach_the_file_and_compile_may_change_on_resume(tmp_path):
    _run(tmp_path, "c", "--steps", "1", "--dtype", "bf16", "--checkpoint-every", "1")
    out = _run(tmp_path, "c", "--steps", "2", "--dtype", "bf16", "--compile")
    tensors, meta = read_safetensors(out)
    recipe = json.loads(meta["sgmd_teacher"])
    assert recipe["steps"] == 2 and recipe["dtype"] == "bf16" and recipe["compile"] is True
    assert all(v.isfinite().all() for v in tensors.values())  # bf16 compiled backward: NaN on a Xeon with AMX


def _one_step(forward_of):
    """One `train_step` of a fresh tiny teacher (batch 2) whose forward is `forward_of(model)`:
    (model before, model after, loss, taken, optimizer)."""
    torch.manual_seed(0)
    model = train_teacher.WanModel(train_teacher.WanConfig(dim=128, ffn_dim=128, num_layers=1))
    torch.nn.init.normal_(model.head.head.weight, std=0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    args = train_teacher.build_parser().parse_args(["--batch-size", "2"])
    loss, taken = train_teacher.train_step(model, forward_of(model), opt, torch.Generator().manual_seed(0),
                                           set(toyvideo.training_prompts()), args)
    return before, model.state_dict(), loss, taken, opt


def _nan_compile(fn):
    return lambda *a: fn(*a) * float("nan")  # a compiler that miscompiles: every output NaN


def test_a_compiled_pass_with_non_finite_gradients_is_demoted_and_the_same_batch_retaken(monkeypatch, capsys):
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config.cpp, "simdlen", None)  # restored after: demoting sets it process-wide
    _, eager, eager_loss, taken, _ = _one_step(lambda m: train_teacher.training_forward(m))
    assert taken
    monkeypatch.setattr(train_teacher.torch, "compile", _nan_compile)
    forwards = []
    _, got, loss, taken, _ = _one_step(lambda m: forwards.append(train_teacher.training_forward(m, compile_=True))
                                       or forwards[0])
    assert taken and forwards[0].current is forwards[0].eager
    err = capsys.readouterr().err
    assert "non-finite loss or gradient (loss nan" in err and "recompiling with 256-bit CPU vectors" in err
    assert "; training uncompiled" in err
    assert inductor_config.cpp.simdlen == train_teacher.NARROW_SIMD_BITS
    assert loss.item() == eager_loss.item()  # the batch redrawn at each stage is the same batch
    for k in eager:
        torch.testing.assert_close(got[k], eager[k], rtol=0, atol=0, msg=k)


def test_a_non_finite_uncompiled_step_is_skipped_and_changes_nothing():
    before, after, loss, taken, opt = _one_step(lambda m: _nan_compile(train_teacher.training_forward(m)))
    assert not taken and loss.isnan()
    assert not opt.state  # AdamW never stepped
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)


def test_a_run_that_keeps_diverging_stops_with_one_line_and_a_finite_checkpoint(tmp_path, monkeypatch):
    _run(tmp_path, "d", "--steps", "1", "--checkpoint-every", "1")
    ckpt = tmp_path / "d.ckpt.safetensors"
    good = {k: v for k, v in read_safetensors(str(ckpt))[0].items() if k.startswith("model.")}
    monkeypatch.setattr(train_teacher, "training_forward", lambda model, *a: _nan_compile(model))
    n = train_teacher.MAX_NONFINITE + 1
    with pytest.raises(SGMDError, match=rf"training diverged: {n} consecutive non-finite steps up to step {n + 1}; "
                                        rf"last good checkpoint: .*d\.ckpt\.safetensors \(step {n}\); lower --lr") as e:
        _run(tmp_path, "d", "--steps", "50", "--checkpoint-every", "1")
    assert "\n" not in str(e.value)
    tensors, meta = read_safetensors(str(ckpt))
    assert int(meta["step"]) == n  # written through the skipped steps, not at the one that stops the run
    for k, v in good.items():  # the skipped steps left the weights where step 1 put them
        torch.testing.assert_close(tensors[k], v, rtol=0, atol=0, msg=k)


def test_compile_failure_falls_back_to_the_uncompiled_forward(monkeypatch, capsys):
    def broken(fn):
        def call(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return call

    monkeypatch.setattr(train_teacher.torch, "compile", broken)
    model, x, t, ctx = _tiny_model(2)
    forward = train_teacher.training_forward(model, compile_=True)
    torch.testing.assert_close(forward(x, t, ctx), model(x, t, ctx), rtol=0, atol=0)
    assert "torch.compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found); training uncompiled" \
        in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="channels"):  # after the fallback, the model's own errors still surface
        forward(x[:, :3], t, ctx)


def _euler_to(model, noise, sigma_end: float, ctx, steps: int):
    """The evaluator's guided Euler sampler (`samplers.sample_teacher`, CFG 3) on one clip, from sigma 1
    down to `sigma_end` in `steps` equal steps."""
    from sgmd import samplers, text

    velocity = samplers.cfg_velocity(model, ctx, text.encode_text([""]), samplers.DEFAULT_GUIDANCE)
    return samplers.sample_teacher(velocity, noise, torch.linspace(1.0, sigma_end, steps + 1))


def _affine_model(x, t, ctx):  # cheap, prompt- and noise-level-dependent, so guidance and steps show
    return 0.5 * x + ctx.mean(dim=(1, 2)).reshape(-1, 1, 1, 1, 1) * 40 + (t / 1000).reshape(-1, 1, 1, 1, 1)


def test_guided_state_is_the_guided_sampler_stopped_at_each_clips_noise_level():
    from sgmd import text

    noise = torch.randn(3, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.97, 0.9, 0.93])
    prompts = ["a red circle moving left slowly", "a blue square", "a white circle moving up"]
    ctx = text.encode_text(prompts)
    got = train_teacher.guided_state(_affine_model, noise, sigma, ctx)
    for i in range(3):
        want = _euler_to(_affine_model, noise[i:i + 1], float(sigma[i]), ctx[i:i + 1], train_teacher.ROLLOUT_STEPS)
        torch.testing.assert_close(got[i:i + 1], want, rtol=1e-5, atol=1e-6)
    assert (got - noise).abs().mean() > 1e-2  # it moved


def _assert_exact_loss_at(loss, p, x_in, x0, eps, sigma, used, high, frames, prompts, change: float = 1e-3):
    """`loss(p)` (a step of the option at share p: the loss and the generator's next draw) is the affine
    model's error against the exact velocity at the inputs `x_in` recomputed by hand, on the high-noise
    clips `high`; the states change the loss; and at share 0 the step draws nothing more."""
    from sgmd import text

    target = eps - x0
    target[high] = train_teacher.exact_velocity(x_in[high], sigma[high], [used[i] for i in high])
    v = _affine_model(x_in, sigma * 1000, text.encode_text(used))
    got, _ = loss(p)
    torch.testing.assert_close(got, float((v - target).pow(2).mean()), rtol=1e-4, atol=1e-8)
    plain, after_plain = loss(0.0)
    assert abs(got - plain) > change * plain  # the states matter
    g_plain = _replay_step_draws(frames, prompts)[-1]
    assert torch.equal(after_plain, torch.rand(1, generator=g_plain))  # off, nothing more is drawn


def test_sampled_states_regress_onto_the_exact_velocity_where_the_guided_sampler_goes():
    """With `sampled_states` p, each exact-target clip with a prompt draws a coin after the step's own
    draws; below p its input is the guided sampler's state at its noise level (recomputed here with the
    evaluator's sampler) and its target the exact velocity there. Off, nothing more is drawn."""
    from sgmd import text
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(10, torch.Generator().manual_seed(0))

    def loss(p):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(_affine_model, frames, prompts, g, 1.0, 0.5, sampled_states=p))
        return out, torch.rand(1, generator=g)

    sigma, x0, eps, used, g = _replay_step_draws(frames, prompts)
    high = (sigma >= 0.5).nonzero().flatten().tolist()
    coins = torch.rand(len(high), generator=g).tolist()
    p = 0.6
    picked = [i for i, c in zip(high, coins) if c < p and used[i]]
    assert picked and len(picked) < len(high)  # some clips sampled, some noised: the choice shows
    x_in = noised(x0, eps, sigma)
    for i in picked:
        x_in[i] = _euler_to(_affine_model, eps[i:i + 1], float(sigma[i]), text.encode_text([used[i]]),
                            train_teacher.ROLLOUT_STEPS)[0]
    _assert_exact_loss_at(loss, p, x_in, x0, eps, sigma, used, high, frames, prompts)


def test_shortened_clip_covers_its_share_of_the_travel_about_the_same_middle():
    g = torch.Generator().manual_seed(0)
    clips = [toyvideo.clip_for_prompt(toyvideo.Prompt("red", s, d, v), g)
             for s in toyvideo.SHAPES for d in toyvideo.DIRECTIONS for v in toyvideo.NAMED_SPEEDS]
    full = mass_centres(toyvideo.render(clips))
    assert (full[:, -1] - full[:, 0]).norm(dim=-1).min() > 3  # the clips move
    for u in (0.0, 0.3, 0.7):
        short = [toyvideo.shortened(c, u) for c in clips]
        for c, s in zip(clips, short):  # the centre's path in closed form: same middle, u of the travel
            (dx, dy), speed, half = toyvideo.DIRECTIONS[c.direction], toyvideo.SPEEDS[c.speed], (toyvideo.FRAMES - 1) / 2
            assert (s.x0 + u * speed * dx * half, s.y0 + u * speed * dy * half) == pytest.approx(
                (c.x0 + speed * dx * half, c.y0 + speed * dy * half), abs=1e-9)
            assert s.x0 == pytest.approx(c.x0 + (1 - u) * speed * dx * half) and s.travel_share == u
        # and as drawn: centroids on that path, within the error of the 1/4-pixel anti-aliasing grid
        t = torch.arange(toyvideo.FRAMES, dtype=torch.float32).view(1, -1, 1)
        path = torch.tensor([[s.x0, s.y0] for s in short]).view(-1, 1, 2) + u * torch.tensor(
            [[toyvideo.SPEEDS[c.speed] * d for d in toyvideo.DIRECTIONS[c.direction]] for c in clips]).view(-1, 1, 2) * t
        torch.testing.assert_close(mass_centres(toyvideo.render(short)), path, atol=0.15, rtol=0)
        twice = [toyvideo.shortened(toyvideo.shortened(c, 0.5), u) for c in clips]
        torch.testing.assert_close(toyvideo.render(twice), toyvideo.render(short), atol=1e-6, rtol=0)
    assert torch.equal(toyvideo.render([toyvideo.shortened(c, 1.0) for c in clips]), toyvideo.render(clips))


@pytest.mark.parametrize("short_from", [0.0, 0.3])
def test_short_travel_regresses_onto_the_exact_velocity_at_the_shortened_clips(short_from):
    """With `short_travel` p, each clip at sigma >= `short_from` (0: the exact-target clips) draws a coin
    and a share u after the step's own draws; below p its input is its clip covering u of its travel,
    noised with its noise, and its target the exact velocity there, also below the exact-target level.
    Off, nothing more is drawn."""
    from sgmd.objectives.common import noised

    prompts, frames, clips = toyvideo.make_batch(10, torch.Generator().manual_seed(0))

    def loss(p):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(_affine_model, frames, prompts, g, 1.0, 0.5, short_travel=p,
                                                     clips=clips, short_travel_from=short_from))
        return out, torch.rand(1, generator=g)

    sigma, x0, eps, used, g = _replay_step_draws(frames, prompts)
    high = (sigma >= 0.5).nonzero().flatten().tolist()
    pool = (sigma >= short_from).nonzero().flatten().tolist() if short_from else high
    coins, shares = torch.rand(2, len(pool), generator=g).tolist()
    p = 0.6
    picked = [(i, u) for i, c, u in zip(pool, coins, shares) if c < p]
    moving = [i for i, _ in picked if clips[i].speed != "still"]
    assert moving and len(picked) < len(pool)  # some clips shortened, some not: the choice shows
    below = [i for i, _ in picked if sigma[i] < 0.5]
    assert bool(below) == bool(short_from)  # with a lower bound, some shortened clips sit under the exact level
    for i, u in picked:
        x0[i] = train_teacher.codec.encode(toyvideo.render([toyvideo.shortened(clips[i], u)]))[0]
    x_in = noised(x0, eps, sigma)
    # a shortened clip differs from its own on a few pixels only: the loss moves less than for rollouts
    _assert_exact_loss_at(loss, p, x_in, x0, eps, sigma, used, sorted(set(high) | set(below)), frames, prompts,
                          change=1e-4)


def test_short_contrast_adds_the_error_of_the_speed_words_effect_on_the_shortened_direction_free_clips():
    """The exact denoiser scores zero with the term on; a prompt-blind exact denoiser (no word effect)
    is charged `w` times the mean square of the exact effect of the speed word against its absence,
    recomputed here on the clips the step shortened (replayed draws) whose prompt names a speed and no
    direction, at their shortened states; the term draws nothing."""
    from sgmd.objectives.common import noised

    prompts, frames, clips = toyvideo.make_batch(24, torch.Generator().manual_seed(0))
    known = prompts + [toyvideo.without(p, "speed") for p in prompts] + [""]

    def loss(model, w, exact_from=0.5):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(model, frames, prompts, g, 1.0, exact_from, short_travel=0.6,
                                                     clips=clips, short_contrast=w))
        return out, torch.rand(1, generator=g)

    assert loss(_ExactModel(known), 3.0, 1e-6)[0] < 1e-8

    class Blind(_ExactModel):
        def __call__(self, x, t, ctx):
            return train_teacher.exact_velocity(x, t / 1000, [""] * len(ctx))

    sigma, x0, eps, used, g = _replay_step_draws(frames, prompts)
    high = (sigma >= 0.5).nonzero().flatten().tolist()
    coins, shares = torch.rand(2, len(high), generator=g).tolist()
    picked = [(i, u) for i, c, u in zip(high, coins, shares) if c < 0.6]
    rows = [(i, u) for i, u in picked if train_teacher.speed_without_direction(used[i])]
    assert rows and len(rows) < len(picked)  # some shortened clips name a direction (or no speed): skipped
    idx = [i for i, _ in rows]
    x_s = noised(train_teacher.codec.encode(toyvideo.render([toyvideo.shortened(clips[i], u) for i, u in rows])),
                 eps[idx], sigma[idx])
    effect = (train_teacher.exact_velocity(x_s, sigma[idx], [used[i] for i in idx])
              - train_teacher.exact_velocity(x_s, sigma[idx], [toyvideo.without(used[i], "speed") for i in idx]))
    assert float(effect.pow(2).mean()) > 1e-3  # the word matters at these states: the charge shows
    blind = Blind(known)
    (with_term, after), (without_term, after_plain) = loss(blind, 2.0), loss(blind, 0.0)
    torch.testing.assert_close(with_term - without_term, 2.0 * float(effect.pow(2).mean()), rtol=1e-4, atol=1e-8)
    assert torch.equal(after, after_plain)


def test_exact_sharpen_regresses_the_exact_clips_onto_the_sharpened_posterior_mean():
    """`exact_sharpen` k: the clips at sigma >= exact_from regress onto the velocity of the posterior
    whose log-likelihood is multiplied by k (recomputed here from the replayed draws); the others keep
    eps - x0; k = 1 is the plain step; the option draws nothing. The model answers the plain targets,
    so the plain loss is zero and the sharpened one is their mean squared difference."""
    from sgmd import toy_posterior
    from sgmd.objectives.common import noised

    prompts, frames, _ = toyvideo.make_batch(8, torch.Generator().manual_seed(0))
    sigma, x0, eps, used, _ = _replay_step_draws(frames, prompts)
    x_s = noised(x0, eps, sigma)
    high = (sigma >= 0.5)[:, None, None, None, None]
    assert 0 < int(high.sum()) < 8
    plain_target = torch.where(high, toy_posterior.velocity(x_s, sigma, used), eps - x0)
    sharp_target = torch.where(high, toy_posterior.velocity(x_s, sigma, used, sharpen=4.0), eps - x0)

    def loss(k):
        g = torch.Generator().manual_seed(1)
        out = float(train_teacher.flow_matching_step(lambda x, t, ctx: plain_target, frames, prompts, g, 1.0, 0.5,
                                                     exact_sharpen=k))
        return out, torch.rand(1, generator=g)

    plain, after_plain = loss(1.0)
    sharp, after = loss(4.0)
    assert plain < 1e-10
    want = float((plain_target - sharp_target).pow(2).mean())
    assert want > 1e-6  # sharpening does move the targets (mostly background: a small mean)
    torch.testing.assert_close(sharp, want, rtol=1e-4, atol=1e-9)
    assert torch.equal(after, after_plain)


def test_exact_sharpen_is_checked():
    with pytest.raises(SGMDError, match="--exact-sharpen"):
        train_teacher.main(["--exact-sharpen", "0.5", "--steps", "1", "--out", "/nonexistent/x.safetensors"])


def test_exact_sharpen_on_speed_without_direction_sharpens_only_those_prompts():
    """`exact_sharpen_on="speed-no-direction"`: the exact targets of prompts that name a speed and no
    direction come from the sharpened posterior, every other prompt's from the exact one; the option
    draws nothing. Recomputed here from the replayed draws."""
    from sgmd import toy_posterior
    from sgmd.objectives.common import noised

    texts = ["a red circle moving quickly", "a blue square moving slowly", "a green circle moving left slowly",
             "a white square", "a cyan circle moving up", "a yellow square moving quickly",
             "a magenta circle moving down quickly", "a red square moving slowly"]
    g = torch.Generator().manual_seed(3)
    clips = [toyvideo.clip_for_prompt(toyvideo.Prompt.parse(t), g) for t in texts]
    frames = toyvideo.render(clips)
    sigma, x0, eps, used, _ = _replay_step_draws(frames, texts, seed=5)  # no prompt dropped; both kinds move
    x_s = noised(x0, eps, sigma)
    plain = toy_posterior.velocity(x_s, sigma, used)
    sharp = toy_posterior.velocity(x_s, sigma, used, sharpen=4.0)
    chosen = torch.tensor([train_teacher.speed_without_direction(u) for u in used])
    assert 0 < int(chosen.sum()) < len(texts)
    want_target = torch.where(chosen[:, None, None, None, None], sharp, plain)

    def loss(on):
        g = torch.Generator().manual_seed(5)
        out = float(train_teacher.flow_matching_step(lambda x, t, ctx: plain, frames, texts, g, 1.0, 1e-6,
                                                     exact_sharpen=4.0, exact_sharpen_on=on))
        return out, torch.rand(1, generator=g)

    only, after_only = loss("speed-no-direction")
    everywhere, after_all = loss("all")
    want = float((plain - want_target).pow(2).mean())
    want_all = float((plain - sharp).pow(2).mean())
    assert want > 1e-6
    # the other prompts' targets move too when sharpened (by a tenth of the chosen ones'), so a
    # mutation that sharpens every row gives `want_all` for `only` and fails its check
    assert want_all > 1.05 * want
    torch.testing.assert_close(only, want, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(everywhere, want_all, rtol=1e-4, atol=1e-9)
    assert everywhere > only
    assert torch.equal(after_only, after_all)


def test_exact_sharpen_on_needs_a_sharpening():
    with pytest.raises(SGMDError, match="--exact-sharpen-on"):
        train_teacher.main(["--exact-sharpen-on", "speed-no-direction", "--steps", "1",
                            "--out", "/nonexistent/x.safetensors"])


def test_bf16_on_a_cpu_without_native_bf16_is_called_out(monkeypatch):
    """Emulated bf16 made a teacher step 10x slower than fp32 on an AVX2 CPU: the trainers say so."""
    from training.roles import emulated_dtype_warning

    assert emulated_dtype_warning("cpu", "fp32") is None and emulated_dtype_warning("cuda", "bf16") is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert "emulated" in emulated_dtype_warning("cpu", "bf16") and "fp32" in emulated_dtype_warning("cpu", "bf16")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert emulated_dtype_warning("cpu", "bf16") is None
