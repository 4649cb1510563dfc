"""Few-step sampling: the student's sigma list, its update rule as a native SAMPLER, and an
all-in-one sampler that reads the generator's recipe; and motion guidance for the multi-step
teacher as a model patch. All run on ComfyUI's own sampling machinery (guider, noise, progress
bar, live previews, Cancel)."""
from __future__ import annotations

from comfy_api.latest import io

from .common import CATEGORY, Recipe, user_errors

UPDATE_RULES = ["euler", "renoise"]
RULE_HELP = ("euler: x' = x0 + s'(x - x0)/s, deterministic (SGMD reference, = ComfyUI euler). renoise: "
             "x' = (1 - s')x0 + s' noise, fresh noise each step (DMD2 / Self-Forcing, like ComfyUI lcm). "
             "Use the rule the generator was trained with.")


def default_recipe():
    """The SGMD 4-step recipe: timesteps 1000, 750, 500, 250 at shift 5, euler, cfg 1."""
    from sgmd.recipe import SamplingRecipe
    from sgmd.schedules import DEFAULT_STUDENT_SHIFT, DEFAULT_STUDENT_TIMESTEPS, student_sigmas

    return SamplingRecipe(sigmas=student_sigmas().tolist(), shift=DEFAULT_STUDENT_SHIFT,
                          student_timesteps=[float(t) for t in DEFAULT_STUDENT_TIMESTEPS], update_rule="euler")


def make_sampler(rule: str):
    """A native SAMPLER (comfy.samplers.KSAMPLER) running `rule`; Cancel is checked every step.
    The renoise rule's fresh noise is seeded from the sampling seed (see sgmd.samplers.x0_sampler)."""
    import comfy.model_management
    import comfy.samplers
    from sgmd.samplers import x0_sampler

    with user_errors():
        fn = x0_sampler(rule, check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
    return comfy.samplers.KSAMPLER(fn)


class SGMDSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDSigmas", display_name="SGMD Sigmas", category=f"{CATEGORY}/sampling",
            description="The few-step schedule of a distilled generator: raw timesteps (0..1000] are divided by 1000, "
                        "warped by the shift s -> k s / (1 + (k - 1) s), and a final 0 is added. Default: "
                        "1000, 750, 500, 250 at shift 5 -> 1, 0.9375, 0.8333, 0.625, 0.",
            inputs=[
                io.String.Input("timesteps", default="1000, 750, 500, 250",
                                tooltip="Comma-separated student timesteps in (0, 1000], strictly decreasing; the "
                                        "number of values is the number of steps."),
                io.Float.Input("shift", default=5.0, min=0.01, max=100.0, step=0.01,
                               tooltip="Shift of the warp (the generator's training shift; SGMD default 5)."),
                io.Boolean.Input("warp", default=True,
                                 tooltip="Apply the shift warp (off: sigma = timestep / 1000)."),
            ],
            outputs=[io.Sigmas.Output(display_name="sigmas", tooltip="Noise levels from 1 down to 0.")],
        )

    @classmethod
    def execute(cls, timesteps: str, shift: float, warp: bool) -> io.NodeOutput:
        from sgmd.schedules import parse_timesteps, student_sigmas

        with user_errors("SGMD Sigmas"):
            return io.NodeOutput(student_sigmas(parse_timesteps(timesteps), shift, use_warp=warp))


class SGMDSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDSampler", display_name="SGMD Sampler", category=f"{CATEGORY}/sampling",
            description="The few-step update rule as a SAMPLER for SamplerCustom / SamplerCustomAdvanced. The renoise "
                        "rule draws its fresh noise from the sampling seed (the noise seed of SamplerCustom), "
                        "continuing the seed's stream after the initial noise, so results are reproducible.",
            inputs=[io.Combo.Input("update_rule", options=UPDATE_RULES, default="euler", tooltip=RULE_HELP)],
            outputs=[io.Sampler.Output(display_name="sampler")],
        )

    @classmethod
    def execute(cls, update_rule: str) -> io.NodeOutput:
        return io.NodeOutput(make_sampler(update_rule))


class SGMDVideoSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDVideoSampler", display_name="SGMD Video Sampler", category=f"{CATEGORY}/sampling",
            description="All-in-one few-step sampling with the generator's recipe (sigmas, update rule, no CFG): one "
                        "model pass per step. Without a recipe: the SGMD 4-step euler schedule at shift 5.",
            inputs=[
                io.Model.Input("model", tooltip="The generator: a Wan 2.1 model with the SGMD LoRA applied "
                                                "(SGMD Generator Loader) or a full generator file."),
                io.Conditioning.Input("positive",
                                      tooltip="The prompt (no negative: distilled generators run at cfg 1)."),
                io.Latent.Input("latent",
                                tooltip="Empty video latent, e.g. EmptyHunyuanLatentVideo; sets size and length."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; the same seed gives the same video as SamplerCustom and as SGMD's "
                                     "own tools (sgmd.noise)."),
                Recipe.Input("recipe", optional=True,
                             tooltip="Sampling recipe from SGMD Generator Loader; default SGMD 4-step euler, shift 5."),
            ],
            outputs=[io.Latent.Output(display_name="latent")],
        )

    @classmethod
    def execute(cls, model, positive, latent, seed: int, recipe=None) -> io.NodeOutput:
        import torch

        import comfy.model_management
        import comfy.sample
        import comfy.samplers
        import comfy.utils
        import latent_preview

        recipe = recipe or default_recipe()
        sigmas = torch.tensor(recipe.sigmas, dtype=torch.float32)
        latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
        guider = comfy.samplers.CFGGuider(model)  # cfg 1 with only a positive: one pass, like BasicGuider
        guider.inner_set_conds({"positive": positive})
        guider.set_cfg(1.0)
        callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
        samples = guider.sample(noise, latent_image, make_sampler(recipe.update_rule), sigmas,
                                denoise_mask=latent.get("noise_mask"), callback=callback,
                                disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        out = latent.copy()
        out.pop("noise_mask", None)
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return io.NodeOutput(out)


# What the shipped teacher file records (sgmd.teacher_sampling); a literal so that building the schema
# imports neither torch nor sgmd (tests/test_nodes_run.py holds the two equal).
SHIPPED_MOTION_GUIDANCE = 0.25


class SGMDMotionGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDMotionGuidance", display_name="SGMD Motion Guidance", category=f"{CATEGORY}/sampling",
            description="Motion guidance for a multi-step teacher (KSampler with CFG): after CFG, adds scale x (what "
                        "the model predicts for the state minus what it predicts for the same state with its frames "
                        "averaged). A clip then commits to the motion its noisy state has begun to show instead of "
                        "settling near a still clip. One more conditional pass per step. The embedded teacher's "
                        "figures are measured with the scale its file records (the default here).",
            inputs=[
                io.Model.Input("model", tooltip="A multi-step video model (the teacher)."),
                io.Float.Input("scale", default=SHIPPED_MOTION_GUIDANCE, min=0.0, max=10.0, step=0.05,
                               tooltip="0 = off. The embedded teacher is measured at its file's value; larger values "
                                       "speed slow clips up and lose still clips (docs/tiny-model.md)."),
                io.Boolean.Input("keep_position_code", default=True,
                                 tooltip="On for the embedded toy teacher, whose latents carry a per-frame position "
                                         "code that the still state keeps; off for other models (plain frame average)."),
            ],
            outputs=[io.Model.Output(display_name="model")],
        )

    @classmethod
    def execute(cls, model, scale: float, keep_position_code: bool) -> io.NodeOutput:
        if scale == 0:
            return io.NodeOutput(model)

        def post_cfg(args):
            import comfy.samplers
            from sgmd import codec
            from sgmd.samplers import motion_guided_denoised, still_state

            x, sigma = args["input"], args["sigma"]
            fixed = codec.position_code(*x.shape[2:]).to(x) if keep_position_code and x.ndim == 5 else None
            x_still = still_state(x, sigma, fixed)
            (x0_still,) = comfy.samplers.calc_cond_batch(args["model"], [args["cond"]], x_still, sigma,
                                                         args["model_options"])
            return motion_guided_denoised(x, args["denoised"], args["cond_denoised"], x_still, x0_still, scale)

        patched = model.clone()
        patched.set_model_sampler_post_cfg_function(post_cfg)
        return io.NodeOutput(patched)


NODES = [SGMDSigmas, SGMDSampler, SGMDVideoSampler, SGMDMotionGuidance]
