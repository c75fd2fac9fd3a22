"""Stage 3 of ``xling transfer``, evaluation: each composed model scored on every target's dev and test sets
(through the prediction cache), one bench per run.
"""

from __future__ import annotations

import json
from pathlib import Path

from xling.errors import XlingError
from xling.recipes.transfer.config import TransferConfig


# ----------------------------------------------------------------------------- evaluation


class _Bench:
    """The base task model in memory; each composition restores the base weights first."""

    def __init__(self, cfg: TransferConfig, task, task_folder: Path):
        import torch

        from xling.methods.train import build_task_model
        from xling.models.loading import load_model, resolve_device, resolve_dtype

        self.cfg = cfg
        lm = load_model(cfg.model, quiet=True, lazy=True)
        dev = resolve_device(cfg.device)
        info = json.loads((task_folder / "xling_train.json").read_text(encoding="utf-8"))
        self.tokenizer = lm.tokenizer
        self.model = build_task_model(lm.path, task.type, task.labels, self.tokenizer,
                                      resolve_dtype(cfg.dtype, dev)).to(dev)
        self.model.eval()
        self.max_length = int(info.get("hparams", {}).get("max_length", cfg.task_max_length))
        self.pristine = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.torch = torch

    def set(self, inputs: list[Path], method: str, weights, options) -> None:
        from safetensors.torch import load_file

        from xling.modules.trained import HEAD_FILE
        from xling.modules.apply import compose_into

        self.model.load_state_dict(self.pristine)
        head = load_file(str(inputs[0] / HEAD_FILE))
        res = self.model.load_state_dict(head, strict=False)
        if res.unexpected_keys:
            raise XlingError(f"{inputs[0]}/{HEAD_FILE}: unexpected tensors {res.unexpected_keys[:3]}")
        compose_into(self.model, inputs, method, weights, options)

    def predict(self, examples, progress) -> list:
        from xling.tasks.encode import predict

        with self.torch.inference_mode():
            return predict(self.model, self.tokenizer, "classification", examples, self.cfg.batch_size,
                           self.max_length, progress)
