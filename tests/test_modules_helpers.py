"""Helpers shared by the module/composition tests (no tests here): tiny LoRA modules and dense references."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import tiny_models

TARGETS = {
    "bert": ["query", "value", "dense"],
    "xlmr": ["query", "key"],
    "llama": ["q_proj", "v_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
}


def make_lora(kind: str, folder: Path, seed: int, *, targets=None, r: int = 4, alpha: float = 8, scale: float = 0.1,
              meta: dict | None = None, **cfg) -> Path:
    """A PEFT LoRA on the tiny ``kind`` model with random A and B, saved with save_pretrained."""
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_models.build(kind)
    pm = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets or TARGETS[kind], **cfg))
    g = torch.Generator().manual_seed(1000 + seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    pm.save_pretrained(str(folder))
    if meta is not None:
        (Path(folder) / "xling_module.json").write_text(json.dumps(meta), encoding="utf-8")
    return Path(folder)


def dense_dws(folder: Path) -> dict[str, torch.Tensor]:
    """Independent reference: every target's dW (out, in) = alpha/r * B @ A, read plainly from the files."""
    cfg = json.loads((Path(folder) / "adapter_config.json").read_text())
    sd = load_file(str(Path(folder) / "adapter_model.safetensors"))
    out = {}
    for k, A in sd.items():
        if k.endswith("lora_A.weight"):
            mod = k[len("base_model.model."):-len(".lora_A.weight")]
            B = sd[k.replace("lora_A", "lora_B")]
        elif k.endswith("lora_embedding_A"):
            mod = k[len("base_model.model."):-len(".lora_embedding_A")]
            B = sd[k.replace("lora_embedding_A", "lora_embedding_B")]
        else:
            continue
        r = A.shape[0]
        scaling = cfg["lora_alpha"] / (r ** 0.5 if cfg.get("use_rslora") else r)
        out[mod] = scaling * (B.double() @ A.double())
    return out


def transposed(kind: str, module: str) -> bool:
    return kind == "gpt2" or "embed" in module


def make_finetuned(kind: str, folder: Path, seed: int, scale: float = 0.02) -> Path:
    """A 'fully fine-tuned' copy of the tiny base: every float weight plus seeded noise."""
    model, tok = tiny_models.build(kind)
    g = torch.Generator().manual_seed(2000 + seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def read_model(folder: Path) -> dict[str, torch.Tensor]:
    folder = Path(folder)
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def corrupt(folder: Path, value: float = float("nan")) -> None:
    """Put ``value`` into the first lora_A tensor of a module."""
    path = Path(folder) / "adapter_model.safetensors"
    sd = load_file(str(path))
    k = sorted(x for x in sd if "lora_A" in x)[0]
    sd[k] = sd[k].clone()
    sd[k].view(-1)[0] = value
    save_file(sd, str(path), metadata={"format": "pt"})
