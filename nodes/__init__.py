"""ComfyUI nodes of the SGMD pack (V3 API). Import only relatively: ComfyUI has its own top-level
`nodes` module. Each file is one node family and reads top to bottom as what the user sees; the
work is done by `sgmd/` and `training/`."""
