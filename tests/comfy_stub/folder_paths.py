"""Test double of ComfyUI's folder_paths: empty model folders under a temporary base."""
import os
import tempfile

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
base_path = os.path.join(tempfile.gettempdir(), "sgmd_comfy_stub")
models_dir = os.path.join(base_path, "models")
folder_names_and_paths = {name: ([os.path.join(models_dir, name)], set(supported_pt_extensions))
                          for name in ("diffusion_models", "loras", "text_encoders", "vae")}


def get_folder_paths(name):
    return list(folder_names_and_paths[name][0])


def add_model_folder_path(name, path, is_default=False):
    paths = folder_names_and_paths.setdefault(name, ([], set()))[0]
    if path not in paths:
        paths.insert(0, path) if is_default else paths.append(path)


def get_filename_list(name):
    if name not in folder_names_and_paths:
        raise KeyError(name)
    return []


def get_full_path(name, filename):
    return None


def get_output_directory():
    return os.path.join(base_path, "output")


def get_temp_directory():
    return os.path.join(base_path, "temp")
