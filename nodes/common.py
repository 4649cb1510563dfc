"""What the node files share: our socket types, the error rule, and model-file lists.

Error rule: a problem the user can fix is an `SGMDError` in the library; a node turns it into a
`ValueError` with the same one-line text, which ComfyUI shows on the node (no traceback noise in
the message, the server keeps running)."""
from __future__ import annotations

import os
from contextlib import contextmanager

from comfy_api.latest import io

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_MODELS = os.path.join(PACK_ROOT, "models")
# shipped files by kind, laid out like ComfyUI/models so each list shows only its kind
PACK_MODEL_FOLDERS = {"diffusion_models": os.path.join(PACK_MODELS, "diffusion_models"),
                      "loras": os.path.join(PACK_MODELS, "loras")}
CATEGORY = "SGMD"

# Our socket types (native ones wherever a native type fits).
Recipe = io.Custom("SGMD_RECIPE")  # sgmd.recipe.SamplingRecipe
Teacher = io.Custom("SGMD_TEACHER")  # {"path", "name", "config", "summary"}
FakeScore = io.Custom("SGMD_FAKE")  # {"init": "teacher" | "resume", "checkpoints"}
Generator = io.Custom("SGMD_GENERATOR")  # {"init": "teacher" | "file" | "resume", "path"}
Prompts = io.Custom("SGMD_PROMPTS")  # {"path", "prompts", "encoder"}
Job = io.Custom("SGMD_JOB")  # {"dir", "name"}


class UserError(ValueError):
    """Shown on the node as a one-line message."""


@contextmanager
def user_errors(what: str = ""):
    """Re-raise the library's SGMDError (and missing files) as a one-line ValueError."""
    from sgmd.errors import SGMDError

    try:
        yield
    except SGMDError as e:
        raise UserError(f"{what}: {e}" if what else str(e)) from None
    except FileNotFoundError as e:
        raise UserError(" ".join(str(e).split())) from None


def model_files(*folders: str) -> list[str]:
    """File names of ComfyUI model folders, in folder order, without duplicates."""
    import folder_paths

    names: list[str] = []
    for folder in folders:
        try:
            found = folder_paths.get_filename_list(folder)
        except KeyError:  # folder not registered (yet)
            continue
        names += [n for n in found if n not in names]
    return names


def model_path(name: str, *folders: str) -> str:
    """Full path of `name` in the first of `folders` that has it; one-line error otherwise."""
    import folder_paths

    for folder in folders:
        try:
            path = folder_paths.get_full_path(folder, name)
        except KeyError:
            continue
        if path:
            return path
    raise UserError(f"model file {name!r} not found in the {' / '.join(folders)} folders; put it there and refresh")
