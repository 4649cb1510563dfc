"""SGMD: pure-PyTorch library (Wan 2.1 model, schedules, samplers, objectives, LoRA, toy codec and
text encoder, metrics). Never imports ComfyUI; no I/O beyond safetensors in `weights`."""
__version__ = "0.1.0"
