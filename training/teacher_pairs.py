"""Teacher pairs: the teacher's guided samples from known noises, computed once before distillation for the
pair-regression plug-in (`sgmd.objectives.pairs`, `run.py --teacher-pairs FILE`).

    python training/teacher_pairs.py --out models/pairs/FILE.safetensors [--count 512] [--teacher FILE]

Pair i: a toy training prompt (drawn with `--seed`, held-out prompts never), the noise of seed
`SEED_BASE * (seed + 1) + i` (`sgmd.noise.noise_for_seed`), and the teacher's sample from it, sampled as
the evaluator samples the teacher (50 Euler steps, CFG 3, the motion guidance its file records).

File (safetensors): `seeds` int64 [N]; `clips` uint8 [N, F, H, W, 3], the decoded toy-codec clips (encoded
back at load in the teacher's codec, recorded as `codec`: within 0.1% of the sampled latents, at a tenth of
their size); metadata `sgmd_pairs` (JSON):
prompts, the teacher's hash and the sampling settings. The file is rewritten atomically after every batch;
the same command run again continues where it stopped. User errors: one line, exit 2."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from sgmd import codec  # noqa: E402
from sgmd.errors import SGMDError  # noqa: E402
from sgmd.noise import CLIP_LATENT_SHAPE, noise_for_seeds  # noqa: E402
from sgmd.objectives.pairs import TeacherPairs  # noqa: E402
from sgmd.samplers import DEFAULT_GUIDANCE  # noqa: E402
from sgmd.teacher_sampling import codec_of, motion_guidance_of, still_pattern_of  # noqa: E402
from sgmd.weights import file_sha256, load_wan, read_metadata, read_safetensors, write_safetensors  # noqa: E402
from training.data import ToyPromptSource  # noqa: E402

KEY = "sgmd_pairs"
SEED_BASE = 10_000_000  # far from the evaluation's seeds (10_000 + 100 * prompt + k)


def pair_prompts(count: int, seed: int) -> list[str]:
    """`count` toy training prompts, drawn as the distillation draws them."""
    return ToyPromptSource().texts(count, torch.Generator().manual_seed(seed))


def pair_seeds(count: int, seed: int) -> list[int]:
    return [SEED_BASE * (seed + 1) + i for i in range(count)]


def read_pairs(path: str) -> tuple[list[str], torch.Tensor, torch.Tensor, dict]:
    """(prompts, seeds int64 [n], clips uint8 [n, F, H, W, 3], settings) of a pair file; n may be fewer than
    settings["count"] while it is being made."""
    if not os.path.isfile(path):
        raise SGMDError(f"teacher pairs: no file {path}")
    tensors, meta = read_safetensors(path)
    try:
        info = json.loads(meta.get(KEY) or "")
        prompts, seeds, clips = info.pop("prompts"), tensors["seeds"], tensors["clips"]
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise SGMDError(f"{path} is not a teacher-pair file (make one with training/teacher_pairs.py)") from None
    if not (len(prompts) == seeds.shape[0] == clips.shape[0]) or clips.dtype != torch.uint8:
        raise SGMDError(f"{path}: {len(prompts)} prompts, {seeds.shape[0]} seeds and {clips.shape[0]} clips disagree")
    return list(prompts), seeds, clips, info


def _write(path: str, prompts, seeds, clips, settings: dict) -> None:
    write_safetensors(path, {"seeds": torch.as_tensor(seeds, dtype=torch.int64).reshape(-1),
                             "clips": torch.as_tensor(clips, dtype=torch.uint8).contiguous()},
                      {KEY: json.dumps({**settings, "prompts": list(prompts)})})


def make_pairs(teacher: str, out: str, count: int = 512, seed: int = 0, steps: int = 50, cfg: float = DEFAULT_GUIDANCE,
               shift: float = 5.0, motion_guidance: float | None = None, batch_size: int = 32, device: str = "cpu",
               log=print) -> str:
    """Sample the pairs into `out`, continuing a partial file made with the same settings."""
    from training.evaluate import generate_teacher  # the evaluator's teacher sampler, the same clips

    if count < 1 or batch_size < 1 or steps < 1:
        raise SGMDError(f"--count, --batch-size and --steps must be >= 1; got {count}, {batch_size}, {steps}")
    meta = read_metadata(teacher)
    codec_id = codec_of(meta)
    if codec_id is None:
        raise SGMDError(f"{teacher} was not trained in a toy codec ({', '.join(codec.CODECS.values())}); teacher pairs "
                        f"are stored as decoded toy clips")
    if motion_guidance is None:
        motion_guidance = motion_guidance_of(meta)
    settings = {"teacher_sha256": file_sha256(teacher, n=64), "count": count, "seed": seed, "steps": steps, "cfg": cfg,
                "shift": shift, "motion_guidance": motion_guidance, "codec": codec_id,
                "noise_rule": f"sgmd.noise.noise_for_seed(seed), seeds {SEED_BASE} * (seed + 1) + i"}
    prompts, seeds = pair_prompts(count, seed), pair_seeds(count, seed)
    done = []
    if os.path.exists(out):
        old_prompts, _, old_clips, old = read_pairs(out)
        if old != settings or old_prompts != prompts[:len(old_prompts)]:
            raise SGMDError(f"{out} holds pairs made with other settings or another teacher: choose another --out")
        done = [old_clips]
        log(f"{out}: {len(old_prompts)} of {count} pairs already made, continuing")
    model = load_wan(teacher, torch.float32, device).eval()
    still = still_pattern_of(meta, *CLIP_LATENT_SHAPE[2:])
    n, t0 = sum(c.shape[0] for c in done), time.time()
    while n < count:
        sl = slice(n, min(count, n + batch_size))
        clips = generate_teacher(model, prompts[sl], seeds[sl], steps, cfg, shift, batch_size, motion_guidance, still)
        done.append(torch.from_numpy(clips))
        n = sl.stop
        _write(out, prompts[:n], seeds[:n], torch.cat(done), settings)
        log(f"{n}/{count} pairs, {time.time() - t0:.0f} s")
    return out


def load_pairs(path: str, teacher_sha256: str, encode, weight: float = 0.05, every_step: bool = False) -> TeacherPairs:
    """The plug-in from a complete pair file made from this teacher; `encode(prompts)` gives the run's text
    embeddings."""
    prompts, seeds, clips, info = read_pairs(path)
    if info.get("teacher_sha256") != teacher_sha256:
        raise SGMDError(f"{path} was made from another teacher (sha256 {info.get('teacher_sha256')}, this one "
                        f"{teacher_sha256}): make pairs for it with training/teacher_pairs.py")
    if len(prompts) < info.get("count", 0):
        raise SGMDError(f"{path} is unfinished ({len(prompts)} of {info['count']} pairs): run its command again")
    codec_id = info.get("codec")
    if codec_id not in codec.CODECS.values():
        raise SGMDError(f"{path} names no toy codec we know ({codec_id!r}): make it again with training/teacher_pairs.py")
    target = codec.encode(clips.float() / 255, codec_id)  # back into the codec the teacher was trained in
    noise = noise_for_seeds(seeds.tolist(), (1, *target.shape[1:]))
    return TeacherPairs(noise=noise, context=encode(prompts), target=target, weight=weight,
                        every_step=every_step)


def build_parser() -> argparse.ArgumentParser:
    from training.config import DistillConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="pair file to write (or continue)")
    p.add_argument("--teacher", default=DistillConfig().teacher, help="teacher file (default: the shipped teacher)")
    p.add_argument("--count", type=int, default=512, help="pairs")
    p.add_argument("--seed", type=int, default=0, help="draws the prompts and names the noise seeds")
    p.add_argument("--steps", type=int, default=50, help="teacher sampling steps")
    p.add_argument("--cfg", type=float, default=DEFAULT_GUIDANCE, help="teacher CFG scale")
    p.add_argument("--shift", type=float, default=5.0, help="teacher schedule shift")
    p.add_argument("--motion-guidance", type=float, default=None, help="default: what the teacher file records")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    return p


def main(argv=None) -> int:
    from training.config import repo_path

    args = build_parser().parse_args(argv)
    try:
        make_pairs(repo_path(args.teacher), args.out, args.count, args.seed, args.steps, args.cfg, args.shift,
                   args.motion_guidance, args.batch_size, args.device)
    except SGMDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; the pairs made so far are kept, run the same command to continue", file=sys.stderr)
        return 2
    print(f"pairs: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
