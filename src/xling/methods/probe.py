"""Linear probes on frozen sentence features: multinomial logistic regression.

The cheap way to get per-language task scores from any encoder or decoder:
features come from one embedding pass (the engine, cached), a linear classifier
is fit on the source language and applied to every language (Conneau et al.
2018, "What you can cram into a single vector"; Alain & Bengio 2016, "Understanding
intermediate layers using linear classifier probes"). Zero-shot transfer through a
frozen representation isolates what the representation itself carries across
languages, which is what alignment metrics such as MEXA claim to predict.

:func:`fit_logreg` minimises the mean cross-entropy plus ``l2 / 2 * ||W||^2``
(the bias is not penalised) over features standardised with the training mean and
standard deviation, by full-batch L-BFGS with a strong-Wolfe line search from
zero: a convex problem, so the result is deterministic and does not depend on
the order of the examples. ``tests/test_probe.py`` checks it against SciPy's
L-BFGS-B on the same objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from xling.errors import XlingError


@dataclass
class LogReg:
    """A fitted probe: ``logits = ((x - mean) / std) @ weight.T + bias``."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    loss: float
    iterations: int

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.float() - self.mean) / self.std
        return z @ self.weight.T + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(dim=1)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = 1e-2, max_iter: int = 200,
               tol: float = 1e-7) -> LogReg:
    """Fit a multinomial logistic regression on ``x`` (n, d) and labels ``y`` (n,) in ``[0, num_classes)``."""
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"fit_logreg: x must be (n, d) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(y) == 0:
        raise XlingError("linear probe: no training examples")
    if not l2 >= 0:
        raise XlingError(f"linear probe: l2 must be >= 0, got {l2}")
    y = y.long()
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise XlingError(f"linear probe: labels must be in [0, {num_classes}), got {int(y.min())}..{int(y.max())}")
    x = x.double()
    mean = x.mean(dim=0)
    std = x.std(dim=0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    d = z.shape[1]
    w = torch.zeros(num_classes, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-2,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        final = float(torch.nn.functional.cross_entropy(z @ w.T + b, y) + 0.5 * l2 * (w * w).sum())
    iters = int(opt.state[opt._params[0]].get("n_iter", 0))
    return LogReg(mean.float(), std.float(), w.detach().float(), b.detach().float(), final, iters)


@dataclass
class ProbeChoice:
    """The probe kept by :func:`select_probe` and every candidate's dev accuracy."""

    layer_index: int
    l2: float
    dev_accuracy: float | None
    grid: list[dict]
    clf: LogReg


def select_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, layers, l2_grid,
                 dev: tuple[torch.Tensor, torch.Tensor] | None = None) -> ProbeChoice:
    """Fit a probe at every (layer, l2) and keep the best accuracy on ``dev``.

    ``x``: (L, n, d) features of the training set, all hidden states; ``layers``:
    indices into its first axis; ``dev``: (features (L, m, d), labels), or None
    when there is one candidate only (nothing to choose). Ties keep the first
    candidate (lowest layer, then smallest l2 in grid order). The choice is made on
    dev data only, never on test.
    """
    layers, l2_grid = list(layers), [float(v) for v in l2_grid]
    if not layers or not l2_grid:
        raise XlingError("linear probe: no layer or l2 to fit")
    if dev is None and (len(layers) > 1 or len(l2_grid) > 1):
        raise XlingError("linear probe: choosing the layer or l2 needs a dev set; pass one layer and one l2")
    best: ProbeChoice | None = None
    grid = []
    for li in layers:
        for l2 in l2_grid:
            clf = fit_logreg(x[li], y, num_classes, l2=l2)
            acc = None if dev is None else float((clf.predict(dev[0][li]) == dev[1]).float().mean())
            grid.append({"layer_index": li, "l2": l2, "dev_accuracy": acc})
            if best is None or (acc is not None and acc > best.dev_accuracy + 1e-12):
                best = ProbeChoice(li, l2, acc, grid, clf)
    return best


def check_probe_options(cfg) -> None:
    """Validate (and normalise) the probe options a config shares: layer, l2, max_train, max_test, threads."""
    if isinstance(cfg.layer, str) and cfg.layer != "auto":
        try:
            cfg.layer = int(cfg.layer)
        except ValueError:
            raise XlingError(f"--layer must be auto or a hidden-state index, got {cfg.layer!r}") from None
    cfg.l2 = tuple(float(v) for v in cfg.l2)
    if not cfg.l2 or any(not v >= 0 for v in cfg.l2):
        raise XlingError(f"--l2 must be one or more values >= 0, got {cfg.l2}")
    for name in ("max_train", "max_test", "threads"):
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise XlingError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


__all__ = ["check_probe_options", "LogReg", "fit_logreg", "ProbeChoice", "select_probe"]
