"""Distillation as a background job: start (returns at once), watch, stop. The trainer runs in its
own process (training/jobs.py); ComfyUI stays free for other prompts. Progress reaches the UI as
websocket events "sgmd.progress" ({name, state, iteration, iterations, generator_loss, fake_loss,
eta_seconds, message}) from a watcher thread per job."""
from __future__ import annotations

import logging
import os
import threading

from comfy_api.latest import io, ui

from .common import CATEGORY, FakeScore, Generator, Job, Prompts, Teacher, UserError, user_errors

DEVICES = ["auto", "cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3"]
EVENT = "sgmd.progress"
log = logging.getLogger("sgmd")
_watchers: dict[str, threading.Thread] = {}


def jobs_root() -> str:
    import folder_paths

    return os.path.join(folder_paths.get_output_directory(), "sgmd_jobs")


def _send(data: dict) -> None:
    from server import PromptServer

    PromptServer.instance.send_sync(EVENT, data)


def _on_end(st: dict) -> None:
    """A job ended: publish a finished job's LoRA to the loras folder, tell the UI."""
    import folder_paths
    from training import jobs

    published = None
    if st["state"] == "finished":
        try:
            published = jobs.publish_lora(st["dir"], folder_paths.get_folder_paths("loras")[0])
        except OSError as e:
            log.warning("[SGMD] could not copy the LoRA of job %s to the loras folder: %s", st["name"], e)
    log.info("[SGMD] job %s %s%s", st["name"], st["state"], f": {st['message']}" if st["message"] else "")
    _send({**jobs.progress_event(st), "lora": os.path.basename(published) if published else None})


def watch(job_dir: str) -> None:
    """One watcher thread per running job (also for jobs an earlier ComfyUI process started)."""
    from training import jobs

    thread = _watchers.get(job_dir)
    if thread is None or not thread.is_alive():
        _watchers[job_dir] = jobs.watch(job_dir, _send, on_end=_on_end)


def _free_gpu(device: str) -> None:
    """Before a job starts on a GPU: unload ComfyUI's models and release cached memory."""
    if device != "cpu":
        import comfy.model_management

        comfy.model_management.unload_all_models()
        comfy.model_management.soft_empty_cache()


def _initialisation(fake: dict, generator: dict) -> dict:
    """Trainer options for where the generator and the fake score start."""
    if fake["init"] == "resume" or generator["init"] == "resume":
        if fake.get("checkpoints") != generator.get("checkpoints") or fake["init"] != generator["init"]:
            raise UserError("a checkpoint holds the generator and the fake score together: set both to resume from "
                            "the same job (or neither)")
        return {"resume": os.path.join(generator["checkpoints"], "checkpoints")}
    if generator["init"] == "file":
        return {"init_generator": generator["path"]}
    return {}


class SGMDTrainStart(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        # Widget defaults are DistillConfig's (tests/test_nodes_schema.py checks); literals keep
        # ComfyUI's start-up free of torch.
        return io.Schema(
            node_id="SGMDTrainStart", display_name="SGMD Train (start job)", category=f"{CATEGORY}/training",
            description="Start distilling the teacher into a few-step generator as a background job and return at "
                        "once. The job runs training/run.py in its own process (output/sgmd_jobs/<job_name>/); one "
                        "job per device. When it finishes, its LoRA is copied to models/loras as "
                        "sgmd_<job_name>.safetensors. Queueing again with the same settings attaches to the job "
                        "(nothing restarts); turn resume on to continue a stopped job. Watch it with SGMD Train "
                        "Status.",
            inputs=[
                Teacher.Input("teacher", tooltip="From SGMD Teacher."),
                FakeScore.Input("fake_score", tooltip="From SGMD Fake Score: where the fake score starts."),
                Generator.Input("generator", tooltip="From SGMD Generator Init: where the generator starts."),
                Prompts.Input("prompts", tooltip="From SGMD Prompt Set."),
                io.Combo.Input("objective", options=["sgmd", "dmd2"], default="sgmd",
                               tooltip="sgmd: 1 fake-score update per generator update. dmd2: the baseline (5)."),
                io.Int.Input("iterations", default=300, min=1, max=1_000_000,
                             tooltip="Generator updates to train for (the tiny teacher: a few hundred)."),
                io.Float.Input("lr_generator", default=2e-4, min=1e-7, max=1e-1, step=1e-5, round=1e-7,
                               tooltip="Generator AdamW learning rate."),
                io.Float.Input("lr_fake", default=2e-4, min=1e-7, max=1e-1, step=1e-5, round=1e-7,
                               tooltip="Fake-score AdamW learning rate (the reference's 1/5 of the generator's let "
                                       "the fake score lag on the tiny teacher)."),
                io.Int.Input("batch_size", default=4, min=1, max=256, tooltip="Prompts per micro-batch."),
                io.Int.Input("lora_rank", default=64, min=1, max=1024,
                             tooltip="Rank of the generator and fake-score LoRAs (alpha = rank: scale 1)."),
                io.String.Input("job_name", default="sgmd_job",
                                tooltip="Folder name under output/sgmd_jobs (letters, digits, _ - .)."),
                io.Combo.Input("device", options=DEVICES, default="auto",
                               tooltip="auto: the first GPU if any, else CPU. On a GPU, ComfyUI's loaded models are "
                                       "unloaded first to make room."),
                io.Boolean.Input("resume", default=False,
                                 tooltip="Continue this job from its newest checkpoint (after a stop or a crash)."),
                io.String.Input("extra_options", multiline=True, default="", optional=True,
                                tooltip="More trainer options, one `name: value` per line (YAML), names as in "
                                        "docs/config.md, e.g. checkpoint_every: 25."),
            ],
            outputs=[Job.Output(display_name="job")],
        )

    @classmethod
    def execute(cls, teacher, fake_score, generator, prompts, objective, iterations, lr_generator, lr_fake, batch_size,
                lora_rank, job_name, device, resume, extra_options="") -> io.NodeOutput:
        from training import jobs

        with user_errors("SGMD Train"):
            options = {"teacher": teacher["path"], "prompts": prompts["path"], "objective": objective,
                       "iterations": iterations, "lr_generator": lr_generator, "lr_fake": lr_fake,
                       "batch_size": batch_size, "lora_rank": lora_rank, "lora_alpha": float(lora_rank),
                       **_initialisation(fake_score, generator), **jobs.parse_options(extra_options)}
            job, started = jobs.start_or_attach(jobs_root(), job_name.strip(), options, device, resume,
                                                before_start=_free_gpu)
        job_dir = os.path.dirname(job["config"])
        watch(job_dir)
        log.info("[SGMD] %s job %s on %s (pid %s): %s", "started" if started else "attached to", job["name"],
                 job["device"], job["pid"], job_dir)
        return io.NodeOutput({"dir": job_dir, "name": job["name"]})


class SGMDTrainStatus(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDTrainStatus", display_name="SGMD Train Status", category=f"{CATEGORY}/training",
            description="State of a distillation job (running / finished / failed / stopped), iteration, losses and "
                        "time left, the latest sample clips (a row per clip) and a loss plot. Runs on every queue: "
                        "queue again to refresh.",
            inputs=[Job.Input("job", tooltip="From SGMD Train (start job).")],
            outputs=[
                io.String.Output(display_name="text", tooltip="The status as text."),
                io.Image.Output(display_name="samples",
                                tooltip="Latest samples: a row per clip, frames left to right."),
                io.Image.Output(display_name="loss_plot", tooltip="Generator and fake-score losses."),
            ],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")  # never equal to itself: the node re-executes on every queue

    @classmethod
    def execute(cls, job) -> io.NodeOutput:
        import folder_paths
        import torch

        from training import jobs

        from . import _render

        with user_errors("SGMD Train Status"):
            st = jobs.status(job["dir"])
        if st["state"] == "running":
            watch(job["dir"])
        elif st["state"] == "finished":
            st["published"] = jobs.publish_lora(job["dir"], folder_paths.get_folder_paths("loras")[0])
        text = jobs.summary(st)
        samples = st["samples"]
        sheet = (_render.contact_sheet(samples["videos"]) if samples is not None
                 else _render.message("no samples yet (written at the end, or every sample_every iterations)"))
        plot = _render.loss_plot(st["records"])
        sheet, plot = torch.from_numpy(sheet), torch.from_numpy(plot)
        previews = [ui.PreviewImage(img, cls=cls).as_dict() for img in (sheet, plot)]
        shown = {"images": previews[0]["images"] + previews[1]["images"], "animated": (False,), "text": (text,)}
        return io.NodeOutput(text, sheet, plot, ui=shown)


class SGMDTrainStop(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SGMDTrainStop", display_name="SGMD Train Stop", category=f"{CATEGORY}/training",
            description="Ask a running job to stop: it finishes its iteration, writes a checkpoint and exits. Start it "
                        "again with resume on to continue. Runs on every queue while it is in the graph: keep it "
                        "muted (Ctrl+M) until you want to stop.",
            inputs=[Job.Input("job", tooltip="From SGMD Train (start job).")],
            outputs=[io.String.Output(display_name="text", tooltip="What happened.")],
            is_output_node=True,
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs):
        return float("nan")

    @classmethod
    def execute(cls, job) -> io.NodeOutput:
        from training import jobs

        with user_errors("SGMD Train Stop"):
            text = jobs.stop_job(job["dir"])
        return io.NodeOutput(text, ui={"text": (text,)})


NODES = [SGMDTrainStart, SGMDTrainStatus, SGMDTrainStop]
