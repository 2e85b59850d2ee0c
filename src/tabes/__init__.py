"""tabes: better decoding for masked diffusion models, with Backward-on-Entropy steering.

Public API:
    load(path)            a denoiser from a folder (our safetensors MDM; HF checkpoints via tabes[hf])
    decode(model, ids, sampler=..., steps=...)     decode with any sampler spec, searches (bon) included
    generate(model, ids, sampler=..., steps=...)   the step-by-step decoding loop (step samplers)
    generate_text(model, prompts, gen_length=...)  prompts in, completions out (transformers checkpoints)
    get_sampler(spec), available_samplers()        the sampler registry
    default_model_path()  the shipped 9x9 Sudoku model
"""

from tabes.generate import generate
from tabes.loading import default_model_path, load
from tabes.protocol import Denoiser, GenerationOutput
from tabes.samplers import available as available_samplers
from tabes.samplers import get_sampler
from tabes.search import decode  # also registers the searches (bon)
from tabes.tasks.text import generate_text

__version__ = "0.1.0"
__all__ = [
    "Denoiser",
    "GenerationOutput",
    "available_samplers",
    "decode",
    "default_model_path",
    "generate",
    "generate_text",
    "get_sampler",
    "load",
]
