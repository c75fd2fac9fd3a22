"""``xling vocab transplant`` and ``xling vocab replace``: a model with a whole new vocabulary.

* ``transplant`` gives a model another model's tokenizer (or a ``tokenizer.json``) and initialises the new embedding
  rows training-free: orthogonal matching pursuit over shared-token anchors (the idea of mergekit's tokensurgeon),
  FOCUS-style sparse combinations of similar shared tokens (Dobler and de Melo 2023), or the mean/random baselines;
* ``replace`` trains a new tokenizer on the target text (byte-level BPE or Unigram, ``--vocab-size``), initialises
  every embedding by FOCUS (or mean, random, OMP), and compares, as FOCUS does, with the original model and with
  vocabulary *extension* (words mined from the same text added to the original tokenizer, initialised the same way).

The maths is in :mod:`xling.methods.vocab.transplant` (matching, auxiliary spaces, OMP, FOCUS),
:mod:`xling.methods.vocab.train_tokenizer` and :mod:`xling.methods.vocab.adapt` (the short causal-LM adaptation).
Every arm (original, original adapted, extended, extended adapted, new, new adapted) is measured on the same held-out
sentences per language: fertility (tokens per word and per character, :mod:`xling.methods.vocab.fertility`) and
bits per character -- the text's negative log-likelihood summed over its tokens, in bits, over its characters -- with
95% bootstrap intervals over sentences and paired intervals for the change against the original. Per-token perplexity
is never compared across tokenizers: they cut the same text into different numbers of tokens.

Outputs: the model folder (safetensors, ``tokenizer.json``, config with remapped special-token ids), reloaded and
checked; ``xling_vocab.json`` (what was done), ``vocab_report.json`` (the measurements) and ``report.html``; a run in
the results store (``vocab-transplant`` / ``vocab-replace``).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from xling.errors import XlingError
from xling.recipes.vocab.config import ReplaceConfig, TransplantConfig
from xling.recipes.vocab.run import (FORMAT, META_JSON, REPORT_JSON, _cfg_dict, _check_out, _check_store,
                                     _fingerprint, _log, _now, _save_store, _vocab_output, _write_json)

REPORT_HTML = "report.html"
#: Longest held-out sentence scored, in tokens under every tokenizer compared (longer ones are left out of all arms).
MAX_SCORED_TOKENS = 512
BPC_NOTE = ("Language models with different tokenizers are compared in bits per character on the same held-out "
            "sentences: the negative log-likelihood of each sentence, summed over its tokens, in bits, divided by its "
            "characters. Per-token perplexity is not comparable across tokenizers, which cut the same text into "
            "different numbers of tokens.")
ROLES = ("bos", "eos", "unk", "pad")


# ============================================================================= text
def _load_text(cfg) -> tuple[dict[str, list[str]], dict[str, list[str]], list]:
    """(training texts, held-out texts) per language, disjoint: the held-out part is the last ``--heldout``
    sentences of each language (at most half); training texts equal to a held-out one are dropped."""
    from xling.harness.sources import load_text_source
    from xling.methods.vocab import corpus as C
    from xling.recipes.vocab import decoder as D

    sources = C.load_sources(cfg.data, cfg.langs, load_corpus=load_text_source)
    kept, held = D.split_heldout(sources, cfg.heldout)
    held_set = {t for texts in held.values() for t in texts}
    train: dict[str, list[str]] = {}
    for s in kept:
        train.setdefault(s.lang or "any", []).extend(t for t in s.texts if t not in held_set)
    if cfg.max_sentences:
        train = {lang: texts[: cfg.max_sentences] for lang, texts in train.items()}
    if not held:
        raise XlingError(f"--data {cfg.data}: no sentences to hold out (word lists are not held out; give sentences)")
    return train, held, sources


def _plain(hf_tok):
    from xling.recipes.vocab.fertility import _plain_backend

    return _plain_backend(hf_tok)


def _roles(hf_tok) -> dict[str, int]:
    out = {}
    for role in ROLES:
        i = getattr(hf_tok, f"{role}_token_id", None) if hf_tok is not None else None
        if isinstance(i, int) and i >= 0:
            out[role] = i
    return out


def _ids(backend, texts: Sequence[str], prefix: int | None) -> list[list[int]]:
    """Each text's ids with the tokenizer's special tokens; ``prefix`` put in front when the tokenizer adds no
    leading token (as :func:`xling.recipes.vocab.decoder.heldout_ids`, without the cut)."""
    out = []
    for t in texts:
        ids = backend.encode(t).ids
        bare = backend.encode(t, add_special_tokens=False).ids
        if prefix is not None and ids[:1] == bare[:1]:
            ids = [prefix] + ids
        out.append(ids)
    return out


def _prefix(model) -> int | None:
    cfg = model.config
    p = cfg.bos_token_id if getattr(cfg, "bos_token_id", None) is not None else getattr(cfg, "eos_token_id", None)
    return p[0] if isinstance(p, (list, tuple)) and p else p


# ============================================================================= the estimate said first


def work_estimate(model, held: dict[str, list[str]], train: dict[str, list[str]], old_backend, new_backend,
                  new_size: int, *, measures_old: int, measures_new: int, adapt_old: int, adapt_new: int,
                  steps: int, batch: int, max_length: int, init: str, n_todo: int, n_anchors: int, aux_dim: int,
                  k: int, device: str = "cpu", threads: int | None = None, load: float = 0.0,
                  rate: float | None = None) -> dict[str, float]:
    """Seconds for each part of a vocabulary change, from the arithmetic (:mod:`xling.engine.estimate`):
    ``scoring`` (every held-out pass: all positions' logits, so the LM head counts at the vocabulary's size),
    ``adaptation`` (``steps`` x ``batch`` sequences of their mean length up to ``max_length``, forward and
    backward: 3 x the forward; ``adapt_old`` and ``adapt_new`` count the models adapted with each tokenizer; an
    extended tokenizer is counted as the old one), ``initialisation`` (OMP: ``k`` rounds of ``n_todo`` x ``n_anchors`` x ``aux_dim``
    products; FOCUS: one; mean and random: none) and ``total``. ``rate``: floating-point operations per second
    (:func:`measured_rate` on the model itself; default: :func:`xling.engine.estimate.throughput`'s assumption)."""
    from xling.engine.estimate import forward_params, throughput

    emb = model.get_input_embeddings().weight
    v_old, h = int(emb.shape[0]), int(emb.shape[1])
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = head is None or head.weight.data_ptr() == emb.data_ptr()
    body = forward_params(model.config, model) - (0 if tied else v_old * h)  # without either vocabulary matrix
    per_old, per_new = 2.0 * (body + v_old * h), 2.0 * (body + new_size * h)
    prefix = _prefix(model)

    def tokens(backend, texts_by_lang, cap=None, sample=None):
        seqs = [s for texts in texts_by_lang.values() for s in _ids(backend, texts[:sample] if sample else texts,
                                                                   prefix)]
        lens = [min(len(s), cap) if cap else len(s) for s in seqs]
        return sum(lens), (sum(lens) / len(lens) if lens else 0.0)

    flops = {"scoring": 0.0, "adaptation": 0.0, "initialisation": 0.0}
    if held:
        flops["scoring"] = (measures_old * per_old * tokens(old_backend, held)[0]
                            + measures_new * per_new * tokens(new_backend, held)[0])
    if steps and train:
        for times, backend, per in ((adapt_old, old_backend, per_old), (adapt_new, new_backend, per_new)):
            if times:
                flops["adaptation"] += 3.0 * int(times) * per * steps * batch * tokens(backend, train, max_length,
                                                                                      50)[1]
    rounds = {"omp": k, "focus": 1}.get(init, 0)
    flops["initialisation"] = 2.0 * rounds * n_todo * n_anchors * aux_dim * (1 if tied else 2)
    rate = rate or throughput(device, threads, load)
    out = {part: f / rate for part, f in flops.items()}
    out["total"] = sum(out.values())
    return out


def measured_rate(model, backend, held: dict[str, list[str]], sentences: int = 4) -> float | None:
    """The model's own speed in floating-point operations per second: the held-out scorer
    (:func:`xling.methods.vocab.lm.sequence_nll`) timed on the first ``sentences`` held-out sentences (one of them
    run first, untimed), counted as :func:`work_estimate` counts them. On a CPU this is several times the assumed
    :data:`xling.engine.estimate.CPU_FLOPS_PER_THREAD` for a decoder's long, wide matrix products, so the estimate
    follows the machine and the model. None without held-out text."""
    from xling.engine.estimate import forward_params
    from xling.methods.vocab.lm import sequence_nll

    texts = [t for ts in held.values() for t in ts[:1]] + [t for ts in held.values() for t in ts[1:]]
    seqs = [s for s in _ids(backend, texts[:sentences + 1], _prefix(model)) if 2 <= len(s) <= MAX_SCORED_TOKENS]
    if len(seqs) < 2:
        return None
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = head is None or head.weight.data_ptr() == emb.data_ptr()
    per = 2.0 * (forward_params(model.config, model) + (emb.shape[0] * emb.shape[1] if tied else 0))
    import torch

    with torch.no_grad():
        sequence_nll(model, seqs[0])
        t = time.perf_counter()
        for ids in seqs[1:]:
            sequence_nll(model, ids)
        secs = time.perf_counter() - t
    return per * sum(len(s) for s in seqs[1:]) / secs if secs > 0 else None


def _say_estimate(what: str, model, model_name: str, parts: dict[str, float], held, device: str,
                  load: float) -> None:
    from xling.engine.estimate import estimate_line, human_seconds, model_params, say

    detail = ", ".join(f"{part} {human_seconds(sec)}" for part, sec in parts.items() if part != "total" and sec >= 1)
    say(estimate_line(what, model=model_name, params=model_params(model.config, model), seconds=parts["total"],
                      device=device, langs=len(held) or None, texts=sum(map(len, held.values())) or None,
                      text_word="held-out sentence", note=f"({detail})" if detail else "", load=load))


# ============================================================================= measurement
def _score(model, texts: Sequence[str], seqs: Sequence[Sequence[int]]) -> list[dict | None]:
    """Per sentence: summed NLL (nats), predicted tokens, characters, words; None when it is too long."""
    from xling.methods.vocab.fertility import count_words
    from xling.methods.vocab.lm import sequence_nll

    rows = []
    for text, ids in zip(texts, seqs):
        if len(ids) > MAX_SCORED_TOKENS or len(ids) < 2:
            rows.append(None)
            continue
        r = sequence_nll(model, ids)
        rows.append({"nll": r["nll"], "n": r["n"], "chars": len(text), "words": count_words(text)})
    return rows


def _measure(model, backend, held: dict[str, list[str]], say=None, name: str = "") -> dict[str, list]:
    prefix = _prefix(model)
    out = {lang: _score(model, texts, _ids(backend, texts, prefix)) for lang, texts in held.items()}
    if say is not None:
        say(f"measured {name} on {sum(map(len, held.values()))} held-out sentences")
    return out


def _summarise(arms: dict[str, dict[str, list]], held: dict[str, list[str]], reps: int, seed: int,
               base: str = "original") -> dict:
    """Per language and over all languages: bits per character (and per word) of every arm with a 95% bootstrap
    interval over sentences, and the paired change against ``base`` with its interval
    (:func:`xling.methods.stats.delta_log_ppl`); only sentences every arm scored are used."""
    from xling.methods.vocab.fertility import writes_spaces

    out: dict = {"note": BPC_NOTE, "base": base, "arms": list(arms), "langs": {}}
    pooled: dict[str, list] = {a: [] for a in arms}
    for lang in held:
        n = len(held[lang])
        valid = [i for i in range(n) if all(arms[a][lang][i] is not None for a in arms)]
        res = {"sentences": len(valid), "left_out_too_long": n - len(valid), "arms": {}}
        for a in arms:
            pooled[a] += [arms[a][lang][i] for i in valid]
        res["arms"] = _arm_stats({a: [arms[a][lang][i] for i in valid] for a in arms}, base, reps, seed,
                                 writes_spaces(lang))
        out["langs"][lang] = res
    out["all"] = {"sentences": len(pooled[base]) if base in pooled else 0,
                  "arms": _arm_stats(pooled, base, reps, seed, all(writes_spaces(lang) for lang in held))}
    return out


def _arm_stats(rows: dict[str, list[dict]], base: str, reps: int, seed: int, spaces: bool) -> dict:
    import torch

    from xling.methods.stats import bootstrap_ci, delta_log_ppl

    ln2 = math.log(2)
    out = {}
    b = rows.get(base) or []
    for a, rs in rows.items():
        if not rs:
            out[a] = {"bits_per_char": None}
            continue
        nll = np.array([r["nll"] for r in rs])
        chars = np.array([r["chars"] for r in rs], dtype=float)
        words = np.array([r["words"] for r in rs], dtype=float)
        d = {"bits_per_char": round(float(nll.sum() / chars.sum() / ln2), 6),
             "bits_per_word": round(float(nll.sum() / words.sum() / ln2), 6) if spaces and words.sum() else None,
             "tokens": int(sum(r["n"] for r in rs))}
        lo, hi = bootstrap_ci(nll, chars, lambda x, y: float(x.sum() / y.sum() / ln2), n_boot=reps, seed=seed)
        d["bits_per_char_ci"] = None if math.isnan(lo) else [round(lo, 6), round(hi, 6)]
        if a != base and b and len(b) >= 2:
            t = lambda rr, key: torch.tensor([r[key] for r in rr], dtype=torch.float64)  # noqa: E731
            delta, lo, hi = delta_log_ppl((t(b, "nll"), t(b, "chars")), (t(rs, "nll"), t(rs, "chars")),
                                          max(reps, 1), seed)
            d["delta_bits_per_char"] = round(delta / ln2, 6)
            d["delta_bits_per_char_ci"] = [round(lo / ln2, 6), round(hi / ln2, 6)]
            d["better_than_base"] = bool(hi < 0)
            d["worse_than_base"] = bool(lo > 0)
        out[a] = d
    return out


def _parallel(sources) -> bool:
    """Whether the text is one parallel corpus (every language from the same corpus, rows aligned), so that the
    held-out rows of two languages are translations of each other and parity against English means something."""
    names = [s.name for s in sources]
    return bool(names) and all(":" in n for n in names) and len({n.split(":", 1)[0] for n in names}) == 1 \
        and len({len(s.texts) for s in sources}) == 1


def _fertility(tokenizers: dict[str, tuple], held: dict[str, list[str]], reps: int, parallel: bool = True) -> dict:
    """Per language and tokenizer: tokens per word and per character on the held-out sentences, parity against
    English where English is among the languages of a parallel corpus (same rows), byte-fallback and unknown
    rates."""
    from xling.methods.vocab.corpus import encode
    from xling.methods.vocab.fertility import byte_token_ids, count_language, fertility_row, writes_spaces
    from xling.methods.vocab.tokenizer import inspect_tokenizer

    english = next((lang for lang in held if lang.startswith("eng")), None) if parallel else None
    out: dict = {}
    for name, (backend, tj) in tokenizers.items():
        info = inspect_tokenizer(tj)
        byte_ids = byte_token_ids(tj, info)
        counts = {lang: count_language(texts, encode(backend, texts), byte_ids, info.unk_id)
                  for lang, texts in held.items()}
        for lang in held:
            eng = counts.get(english) if english and counts[english].rows == counts[lang].rows else None
            row = fertility_row(counts[lang], eng, spaces=writes_spaces(lang), n_boot=reps)
            out.setdefault(lang, {})[name] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
    return out


# ============================================================================= the new vocabulary
def _carried_specials(hf_tok, old_view, model) -> list[str]:
    """The old special tokens a trained tokenizer carries (ids ``0..``, in old id order): those the config names,
    the tokenizer's own special tokens, the post-processor's, and added tokens the chat template uses (so unused
    placeholders such as Gemma's ``<unusedN>`` are not carried)."""
    from xling.methods.vocab.model import config_token_ids
    from xling.methods.vocab.tokenizer import _post_processor_ids

    ids = set(config_token_ids(model)) | {int(i) for i in getattr(hf_tok, "all_special_ids", []) or []}
    ids |= _post_processor_ids(old_view.tj.get("post_processor"))
    if old_view.info.unk_id is not None:
        ids.add(old_view.info.unk_id)
    template = getattr(hf_tok, "chat_template", None)
    if isinstance(template, dict):
        template = " ".join(map(str, template.values()))
    if isinstance(template, str):
        ids |= {i for c, i in old_view.special.items() if c in template}
    return [old_view.tokens[i] for i in sorted(ids) if 0 <= i < len(old_view.tokens) and old_view.tokens[i]]


#: Special tokens of a bare tokenizer.json whose role is taken from their name (when no old token of that role has
#: the same content).
ROLE_NAMES = {"bos": ("<s>", "<bos>", "<|begin_of_text|>", "<|startoftext|>"),
              "eos": ("</s>", "<eos>", "<|end_of_text|>", "<|endoftext|>"),
              "unk": ("<unk>", "<|unk|>"), "pad": ("<pad>", "<|pad|>")}


def _roles_by_content(old_roles: dict[str, int], old_view, new_view, guess: bool = False) -> dict[str, int]:
    """The new tokenizer's special token of each role: the one with the content of the old token of that role, or
    (``guess``, for a bare tokenizer.json) one with a usual name for it (:data:`ROLE_NAMES`)."""
    out = {}
    for role, i in old_roles.items():
        c = old_view.tokens[i] if i < len(old_view.tokens) else None
        if c is not None and c in new_view.special:
            out[role] = new_view.special[c]
    if guess:
        for role, names in ROLE_NAMES.items():
            if role not in out:
                found = [new_view.special[n] for n in names if n in new_view.special]
                if found:
                    out[role] = found[0]
    return out


def _resolve_aux(aux: str, init: str, donor_weights: bool, has_text: bool) -> str | None:
    if init in ("mean", "random"):
        return None
    if aux != "auto":
        return aux
    if init == "omp":
        return "donor" if donor_weights else "decomposition"
    return "text" if has_text else ("donor" if donor_weights else "decomposition")


def new_vocabulary(model, old_view, new_view, old_roles: dict[str, int], new_roles: dict[str, int], *, init: str,
                   aux: str | None, k: int = 8, donor: dict | None = None, text_aux=None, seed: int = 0,
                   device: str = "cpu", overlap=None) -> dict:
    """Give ``model`` the vocabulary of ``new_view`` in place (see :mod:`xling.methods.vocab.transplant`); returns
    what was done: the overlap, how every new id was initialised, the auxiliary space."""
    import torch

    from xling.methods.vocab import transplant as T
    from xling.methods.vocab.model import _configs, replace_vocab_, vocab_rows, vocab_tensors

    overlap = overlap if overlap is not None else T.match_vocabularies(new_view, old_view, new_roles, old_roles)
    V = vocab_rows(model)
    new_size = new_view.info.size
    shared = {n: o for n, o in overlap.shared.items() if o < V}
    anchors = sorted(n for n in shared if overlap.how[n] in ("token", "surface"))
    todo = [i for i in range(new_size) if i not in shared]
    decomposer = T.Decomposer(old_view.tj)
    surfaces = {i: new_view.surfaces[i] for i in todo if new_view.surfaces[i] is not None}
    dec_plan, _ = T.decomposition_plan(surfaces, decomposer)
    dec_plan = {i: (ids[ids < V], w[ids < V] / w[ids < V].sum()) for i, (ids, w) in dec_plan.items()
                if (ids < V).any()}
    vts = vocab_tensors(model)
    tensors = {vt.role: vt for vt in vts if vt.role in ("input", "output")}
    gen = torch.Generator().manual_seed(seed)
    plans: dict[str, tuple[dict, list[int], list[int], dict]] = {}  # role -> (plan, mean ids, random ids, counts)
    donor = donor or {}
    for role in ("input", "output"):
        if role not in tensors:
            continue
        if role == "output" and aux == "text" and "input" in plans:
            plans[role] = plans["input"]
            continue
        if init == "random":
            plans[role] = ({}, [], list(todo), {"random": len(todo)})
            continue
        if init == "mean":
            plan = {i: dec_plan[i] for i in todo if i in dec_plan}
            mean = [i for i in todo if i not in dec_plan]
            plans[role] = (plan, mean, [], {"mean_of_pieces": len(plan), "mean_of_all_rows": len(mean)})
            continue
        if aux == "donor":
            space = T.donor_space(donor[role], todo, anchors)
        elif aux == "text":
            space = T.text_space(text_aux, todo, anchors)
        else:
            vt = tensors[role]
            space = T.decomposition_space(vt.tensor, vt.dim, dec_plan, todo, shared)
        plan, missing = T.plan_in_space(space, init, todo, anchors, shared, k, device)
        fell = [i for i in missing if i in dec_plan]
        mean = [i for i in missing if i not in dec_plan]
        plan.update({i: dec_plan[i] for i in fell})
        plans[role] = (plan, mean, [], {init: len(plan) - len(fell), "fallback_mean_of_pieces": len(fell),
                                        "fallback_mean_of_all_rows": len(mean)})
    if "output" not in plans:
        plans["output"] = plans["input"]

    def rows(vt, old):
        plan, mean, rand, _ = plans["input" if vt.role == "input" else "output"]
        return T.assemble_rows(old, vt.dim, new_size, shared, plan, rand, mean, gen, is_bias=vt.role == "bias")

    old_role_of = {}
    for role in ROLES:
        if role in old_roles and old_roles[role] not in old_role_of:
            old_role_of[old_roles[role]] = role

    def new_id(old: int) -> int | None:
        old = int(old)
        c = old_view.tokens[old] if 0 <= old < len(old_view.tokens) else None
        if c is not None and c in new_view.special:
            return new_view.special[c]
        role = old_role_of.get(old)
        return new_roles.get(role) if role else None

    had = [(cfg, key) for cfg in _configs(model) for key in ("bos_token_id", "eos_token_id", "pad_token_id")
           if getattr(cfg, key, None) is not None]
    replace_vocab_(model, new_size, rows, new_id)
    for cfg, key in had:  # the new tokenizer's token of each role, where it has one (lists keep their mapped ids)
        value = getattr(cfg, key, None)
        if key[:3] in new_roles:
            if not isinstance(value, (list, tuple)):
                setattr(cfg, key, new_roles[key[:3]])
            elif not value:
                setattr(cfg, key, [new_roles[key[:3]]])
    return {"old_size": old_view.info.size, "old_rows": V, "new_size": new_size,
            "old_family": old_view.info.family, "new_family": new_view.info.family,
            "shared": len(shared), "shared_by": overlap.counts(), "anchors": len(anchors), "initialised": len(todo),
            "method": init, "aux": aux, "k": k if init == "omp" else None,
            "by_role": ({"input": plans["input"][3], "output": plans["output"][3]} if "output" in tensors
                        else {"input (tied head)": plans["input"][3]}),
            "tied": "output" not in tensors, "special_roles_new": new_roles}


# ============================================================================= arms
def _adapt(model, backend, texts: dict[str, list[str]], cfg, say, name: str) -> dict:
    from xling.methods.vocab.adapt import adapt_causal_lm

    prefix = _prefix(model)
    seqs = [s for lang in texts for s in _ids(backend, texts[lang], prefix)]
    pad = getattr(model.config, "pad_token_id", None)
    pad = pad if isinstance(pad, int) else (prefix if isinstance(prefix, int) else 0)
    every = max(1, cfg.adapt_steps // 5)

    def progress(step, loss):
        if step % every == 0 or step == cfg.adapt_steps - 1:
            say(f"adapting {name}: step {step + 1}/{cfg.adapt_steps}, loss {loss:.3f}")

    return adapt_causal_lm(model, seqs, steps=cfg.adapt_steps, lr=cfg.adapt_lr, batch_size=cfg.adapt_batch_size,
                           seed=cfg.seed, scope=cfg.adapt_scope, max_length=cfg.adapt_max_length, pad_id=pad,
                           progress=progress if cfg.progress else None)


def _device(cfg):
    from xling.models.loading import resolve_device

    return resolve_device(cfg.device)


def _donor(spec: str, need_weights: bool, quiet: bool):
    """(folder or None, tokenizer JSON, hf tokenizer or None, has weights) of ``--tokenizer-from``."""
    import json

    from xling.methods.vocab.tokenizer import build_tokenizer, load_json
    from xling.modules.vocab_folder import load_tokenizer

    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".json":
            raise XlingError(f"--tokenizer-from {spec}: a file must be a tokenizer.json")
        try:
            tj = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise XlingError(f"--tokenizer-from {spec}: not a tokenizer JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(tj, dict) or "model" not in tj:
            raise XlingError(f"--tokenizer-from {spec}: not a tokenizer JSON (no 'model')")
        build_tokenizer(tj)
        return None, tj, None, False
    folder, hf = load_tokenizer(spec, quiet=quiet)
    tj = load_json(hf)
    has = bool(list(Path(folder).glob("*.safetensors"))) and (Path(folder) / "config.json").is_file()
    if need_weights and not has:
        from xling.modules.vocab_folder import resolve_folder

        folder = resolve_folder(spec)
        has = bool(list(Path(folder).glob("*.safetensors")))
        if not has:
            raise XlingError(f"--tokenizer-from {spec}: no safetensors weights for the donor space (--aux donor)")
    return Path(folder), tj, hf, has


def _donor_matrices(folder: Path) -> dict:
    from xling.modules.vocab_folder import load_model_and_tokenizer

    _, m, _ = load_model_and_tokenizer(str(folder), "fp32")
    inp = m.get_input_embeddings().weight.detach().float().clone()
    out = m.get_output_embeddings() if hasattr(m, "get_output_embeddings") else None
    w = out.weight.detach().float().clone() if out is not None and getattr(out, "weight", None) is not None else inp
    del m
    return {"input": inp, "output": w}


def _reload_check(tmp: Path, model, backend, probe: str, dtype: str) -> dict:
    """The written folder loads and computes what the model in memory computes."""
    import torch

    from xling.modules.vocab_folder import load_model_and_tokenizer

    _, again, tok = load_model_and_tokenizer(str(tmp), dtype)
    ids = backend.encode(probe).ids
    same_ids = list(tok(probe)["input_ids"]) == ids
    x = torch.tensor([ids])
    with torch.no_grad():
        a = again(input_ids=x).logits.float()
        dev = next(model.parameters()).device
        b = model(input_ids=x.to(dev)).logits.float().cpu()
    out = {"probe_tokens": len(ids), "tokenizer_ids_equal": bool(same_ids),
           "max_abs_diff_logits": float((a - b).abs().max()), "vocab_size": int(again.config.vocab_size)}
    del again
    return out


def _common_start(cfg, command: str):
    started = _now()
    _check_out(Path(cfg.out), overwrite=cfg.overwrite, command=command)
    _check_store(cfg.store)
    return started, time.perf_counter()


def _write(cfg, command: str, model, new_tj, folder: Path, meta: dict, report: dict, started: str, save_kw: dict,
           backend, probe: str) -> dict:
    from xling.io import output_folder
    from xling.modules.vocab_folder import folder_bytes, save_folder
    from xling.recipes.vocab.transplant_report import render_report

    out = Path(cfg.out)
    with output_folder(out, command=command, overwrite=cfg.overwrite or _vocab_output(out)) as tmp:
        save_folder(model, new_tj, save_kw.pop("source"), tmp, **save_kw)
        report["reload"] = _reload_check(tmp, model, backend, probe, cfg.dtype)
        report["file_bytes"] = {"before": folder_bytes(folder), "after": folder_bytes(tmp)}
        _write_json(tmp / META_JSON, meta)
        (tmp / REPORT_HTML).write_text(render_report(report), encoding="utf-8")
        _write_json(tmp / REPORT_JSON, report)
    if cfg.store is not None:
        report["run_id"] = _save_store(cfg.store, command.replace(" ", "-"), cfg.model, meta["source_fingerprint"],
                                       cfg.data, meta.get("corpus_fingerprint"), _cfg_dict(cfg), report, started)
    return report


def _probe(held: dict | None) -> str:
    for texts in (held or {}).values():
        if texts:
            return texts[0]
    return "Hello, world. Hallo Welt. Habari ya dunia."


def _causal(model) -> bool:
    from xling.recipes.vocab import decoder as D

    return D.is_causal_lm(model)


# ============================================================================= transplant
def transplant(config: TransplantConfig | None = None, **kwargs) -> dict:
    """``xling vocab transplant`` (see the module docstring); returns the report."""
    from xling.methods.vocab import corpus as C
    from xling.methods.vocab import init as I
    from xling.methods.vocab import transplant as T
    from xling.methods.vocab.model import count_parameters
    from xling.methods.vocab.tokenizer import build_tokenizer, load_json
    from xling.modules.vocab_folder import load_model_and_tokenizer

    cfg = config if config is not None else TransplantConfig(**kwargs)
    say = lambda m: _log(cfg.progress, m)  # noqa: E731
    started, t0 = _common_start(cfg, "vocab transplant")
    train, held, sources = _load_text(cfg) if cfg.data else ({}, {}, [])
    aux_wanted = _resolve_aux(cfg.aux, cfg.init, True, bool(cfg.data))
    dfolder, new_tj, new_hf, has_weights = _donor(cfg.tokenizer_from, aux_wanted == "donor" and cfg.aux == "donor",
                                                  not cfg.progress)
    aux = _resolve_aux(cfg.aux, cfg.init, has_weights, bool(cfg.data))
    if aux == "donor" and not has_weights:
        raise XlingError(f"--aux donor: --tokenizer-from {cfg.tokenizer_from} has no model weights (a tokenizer.json "
                         "alone); use --aux decomposition or text")
    folder, model, old_hf = load_model_and_tokenizer(cfg.model, cfg.dtype)
    _check_out(Path(cfg.out), folder, overwrite=cfg.overwrite, command="vocab transplant")
    causal = _causal(model)
    if cfg.adapt_steps and not causal:
        raise XlingError(f"model {cfg.model}: --adapt-steps needs a causal LM with its head")
    model.to(_device(cfg))
    old_tj = load_json(old_hf)
    old_backend = _plain(old_hf)
    new_backend = build_tokenizer(new_tj)
    new_backend.no_truncation()
    new_backend.no_padding()
    old_view, new_view = T.token_surfaces(old_tj, old_backend), T.token_surfaces(new_tj, new_backend)
    old_roles = _roles(old_hf)
    new_roles = _roles(new_hf) if new_hf is not None else _roles_by_content(old_roles, old_view, new_view, True)
    say(f"{cfg.model}: {old_view.info.family} tokenizer of {old_view.info.size} ids -> {cfg.tokenizer_from}: "
        f"{new_view.info.family}, {new_view.info.size} ids; init {cfg.init}" + (f" in the {aux} space" if aux else ""))
    donor = _donor_matrices(dfolder) if aux == "donor" else None
    overlap = T.match_vocabularies(new_view, old_view, new_roles, old_roles)
    if cfg.progress:
        from xling.engine.estimate import current_load

        V = model.get_input_embeddings().weight.shape[0]
        shared = {n for n, o in overlap.shared.items() if o < V}
        anchors = sum(1 for n in shared if overlap.how[n] in ("token", "surface"))
        dim = (cfg.aux_dim if aux == "text" else int(donor["input"].shape[1]) if aux == "donor"
               else int(model.get_input_embeddings().weight.shape[1]))
        load = current_load()
        measured = bool(held) and causal
        parts = work_estimate(model, held if measured else {}, train, old_backend, new_backend, new_view.info.size,
                              measures_old=1 + int(bool(cfg.adapt_steps and cfg.adapt_original)),
                              measures_new=1 + int(bool(cfg.adapt_steps)),
                              adapt_old=bool(cfg.adapt_steps and cfg.adapt_original), adapt_new=bool(cfg.adapt_steps),
                              steps=cfg.adapt_steps, batch=cfg.adapt_batch_size, max_length=cfg.adapt_max_length,
                              init=cfg.init, n_todo=new_view.info.size - len(shared), n_anchors=anchors, aux_dim=dim,
                              k=cfg.k, device=str(_device(cfg)), load=load,
                              rate=measured_rate(model, old_backend, held) if measured else None)
        _say_estimate("vocab transplant", model, str(cfg.model), parts, held if measured else {},
                      str(_device(cfg)), load)
    all_train = [t for texts in train.values() for t in texts]
    text_aux = I.ppmi_svd(C.encode(new_backend, all_train), cfg.aux_dim, seed=cfg.seed) if aux == "text" else None

    arms: dict[str, dict] = {}
    adaptation: dict[str, dict] = {}
    if held and causal:
        arms["original"] = _measure(model, old_backend, held, say, "the original")
        if cfg.adapt_steps and cfg.adapt_original:
            twin = copy.deepcopy(model)
            adaptation["original + adapted"] = _adapt(twin, old_backend, train, cfg, say, "the original")
            arms["original + adapted"] = _measure(twin, old_backend, held, say, "the adapted original")
            del twin
    params_before = count_parameters(model)
    init_report = new_vocabulary(model, old_view, new_view, old_roles, new_roles, init=cfg.init, aux=aux, k=cfg.k,
                                 donor=donor, text_aux=text_aux, seed=cfg.seed, device=str(_device(cfg)),
                                 overlap=overlap)
    del donor
    say(f"{init_report['shared']} of {init_report['new_size']} new ids shared with the old vocabulary "
        f"{init_report['shared_by']}; {init_report['initialised']} initialised")
    if held and causal:
        arms["transplanted"] = _measure(model, new_backend, held, say, "the transplanted model")
        if cfg.adapt_steps:
            adaptation["transplanted + adapted"] = _adapt(model, new_backend, train, cfg, say, "the transplanted model")
            arms["transplanted + adapted"] = _measure(model, new_backend, held, say, "the adapted transplant")
    report = {
        "operation": "transplant", "model": cfg.model, "tokenizer_from": cfg.tokenizer_from, "out": str(cfg.out),
        "langs": cfg.langs, "data": cfg.data, "init": init_report,
        "parameters": {"before": params_before, "after": count_parameters(model)},
        "adaptation": {"steps": cfg.adapt_steps, "runs": adaptation},
    }
    if held:
        report["heldout_sentences"] = {lang: len(t) for lang, t in held.items()}
        report["training_sentences"] = {lang: len(t) for lang, t in train.items()}
        report["fertility"] = _fertility({"original": (old_backend, old_tj), "transplanted": (new_backend, new_tj)},
                                         held, cfg.bootstrap, _parallel(sources))
    if arms:
        report["bits_per_char"] = _summarise(arms, held, cfg.bootstrap, cfg.seed)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    meta = {"format": FORMAT, "operation": "transplant", "source_model": cfg.model, "source_folder": str(folder),
            "source_fingerprint": _fingerprint(folder), "tokenizer_from": cfg.tokenizer_from,
            "tokenizer_folder": str(dfolder) if dfolder else None, "init": init_report,
            "id_map": {"rule": "ids are the new tokenizer's; shared tokens copy the old row of the token with the "
                               "same surface (see vocab_report.json init.shared_by)"},
            "corpus_fingerprint": C.fingerprint(sources) if sources else None, "created": _now()}
    if dfolder is not None:
        save_kw = {"source": dfolder, "extra_notices": (folder,)}
    else:
        save_kw = {"source": folder, "copy_tokenizer_files": False,
                   "tokenizer_config": _bare_tokenizer_config(new_view, new_roles)}
    return _write(cfg, "vocab transplant", model, new_tj, folder, meta, report, started, save_kw, new_backend,
                  _probe(held))


def _bare_tokenizer_config(new_view, new_roles: dict[str, int]) -> dict:
    """The tokenizer config of a bare ``tokenizer.json``: its class and the special tokens of each role."""
    cfg: dict = {"tokenizer_class": "TokenizersBackend"}
    for role, i in new_roles.items():
        cfg[f"{role}_token"] = new_view.tokens[i]
    return cfg


# ============================================================================= replace
def replace(config: ReplaceConfig | None = None, **kwargs) -> dict:
    """``xling vocab replace`` (see the module docstring); returns the report."""
    import torch

    from xling.methods.vocab import corpus as C
    from xling.methods.vocab import init as I
    from xling.methods.vocab import transplant as T
    from xling.methods.vocab.extend import mine_words, plan_extension
    from xling.methods.vocab.model import count_parameters, extend_model_, vocab_rows
    from xling.methods.vocab.tokenizer import build_tokenizer, load_json
    from xling.methods.vocab.train_tokenizer import train_tokenizer
    from xling.modules.vocab_folder import load_model_and_tokenizer

    cfg = config if config is not None else ReplaceConfig(**kwargs)
    say = lambda m: _log(cfg.progress, m)  # noqa: E731
    started, t0 = _common_start(cfg, "vocab replace")
    train, held, sources = _load_text(cfg)
    folder, model, old_hf = load_model_and_tokenizer(cfg.model, cfg.dtype)
    _check_out(Path(cfg.out), folder, overwrite=cfg.overwrite, command="vocab replace")
    if not _causal(model):
        raise XlingError(f"model {cfg.model}: vocab replace needs a causal LM with its head (it measures bits per "
                         "character)")
    model.to(_device(cfg))
    old_tj = load_json(old_hf)
    old_backend = _plain(old_hf)
    old_view = T.token_surfaces(old_tj, old_backend)
    old_roles = _roles(old_hf)
    all_train = [t for texts in train.values() for t in texts]
    specials = _carried_specials(old_hf, old_view, model)
    unk = old_view.tokens[old_view.info.unk_id] if old_view.info.unk_id is not None else None
    say(f"training a {cfg.tokenizer_type} tokenizer of {cfg.vocab_size} on {len(all_train)} sentences "
        f"({len(specials)} special tokens carried)")
    new_tj = train_tokenizer(all_train, cfg.tokenizer_type, cfg.vocab_size, specials, unk=unk,
                             post_processor=old_tj.get("post_processor"))
    new_backend = build_tokenizer(new_tj)
    new_view = T.token_surfaces(new_tj, new_backend)
    new_roles = _roles_by_content(old_roles, old_view, new_view)
    aux = _resolve_aux(cfg.aux, cfg.init, False, True)
    if cfg.progress:
        from xling.engine.estimate import current_load

        overlap = T.match_vocabularies(new_view, old_view, new_roles, old_roles)
        V = model.get_input_embeddings().weight.shape[0]
        shared = {n for n, o in overlap.shared.items() if o < V}
        anchors = sum(1 for n in shared if overlap.how[n] in ("token", "surface"))
        dim = cfg.aux_dim if aux == "text" else int(model.get_input_embeddings().weight.shape[1])
        ext = int(cfg.extend_tokens is None or cfg.extend_tokens > 0)  # the extension baseline, at the old cost
        adapted = bool(cfg.adapt_steps)
        load = current_load()
        parts = work_estimate(model, held, train, old_backend, new_backend, new_view.info.size,
                              measures_old=1 + int(adapted and cfg.adapt_original) + ext * (1 + int(adapted)),
                              measures_new=1 + int(adapted),
                              adapt_old=int(adapted and cfg.adapt_original) + ext * int(adapted), adapt_new=int(adapted),
                              steps=cfg.adapt_steps, batch=cfg.adapt_batch_size, max_length=cfg.adapt_max_length,
                              init=cfg.init, n_todo=new_view.info.size - len(shared), n_anchors=anchors, aux_dim=dim,
                              k=cfg.k, device=str(_device(cfg)), load=load,
                              rate=measured_rate(model, old_backend, held))
        _say_estimate("vocab replace", model, str(cfg.model), parts, held, str(_device(cfg)), load)
    text_aux = I.ppmi_svd(C.encode(new_backend, all_train), cfg.aux_dim, seed=cfg.seed) if aux == "text" else None

    arms: dict[str, dict] = {}
    adaptation: dict[str, dict] = {}
    tokenizers = {"original": (old_backend, old_tj)}
    arms["original"] = _measure(model, old_backend, held, say, "the original")
    if cfg.adapt_steps and cfg.adapt_original:
        twin = copy.deepcopy(model)
        adaptation["original + adapted"] = _adapt(twin, old_backend, train, cfg, say, "the original")
        arms["original + adapted"] = _measure(twin, old_backend, held, say, "the adapted original")
        del twin

    # the extension baseline: words of the training text added to the original tokenizer, initialised alike
    new_tokens = sum(1 for i in range(new_view.info.size) if i not in
                     T.match_vocabularies(new_view, old_view, new_roles, old_roles).shared)
    n_ext = new_tokens if cfg.extend_tokens is None else cfg.extend_tokens
    extension = None
    if n_ext:
        mined = mine_words(old_backend, old_tj, all_train, None, n_ext, min_count=2)
        if mined:
            plan = plan_extension(old_backend, old_tj, [c.word for c in mined])
            if plan.added:
                ext_backend = build_tokenizer(plan.tokenizer_json)
                ext_backend.no_truncation()
                ext_backend.no_padding()
                twin = copy.deepcopy(model)
                rows_before = vocab_rows(twin)
                new_ids = plan.new_ids
                order = [plan.added[p] for p in sorted(plan.added, key=plan.added.get)]
                if cfg.init == "random":
                    wplan = None
                else:
                    wplan = I.mean_plan(old_backend, plan.added)
                    if cfg.init in ("focus", "omp"):
                        eaux = I.ppmi_svd(C.encode(ext_backend, all_train), cfg.aux_dim, seed=cfg.seed)
                        excluded = set(plan.info.special_ids) | set(plan.info.added_ids)
                        cands = [i for i in range(min(plan.info.size, rows_before)) if i not in excluded]
                        p, _ = I.focus_plan(eaux, new_ids, cands)
                        wplan.update(p)
                gen = torch.Generator().manual_seed(cfg.seed)
                first, n_new = plan.first_new, len(new_ids)

                def ext_rows(vt, old):
                    fresh = (I.random_rows(old, vt.dim, n_new, gen, is_bias=vt.role == "bias") if wplan is None
                             else I.combine_rows(old, vt.dim, wplan, order))
                    tail = first + n_new
                    if rows_before > tail:
                        fresh = torch.cat([fresh, old.narrow(vt.dim, tail, rows_before - tail)], dim=vt.dim)
                    return fresh

                extend_model_(twin, max(rows_before, first + n_new), ext_rows, first)
                tokenizers["extended"] = (ext_backend, plan.tokenizer_json)
                arms["extended"] = _measure(twin, ext_backend, held, say, "the extended model")
                if cfg.adapt_steps:
                    adaptation["extended + adapted"] = _adapt(twin, ext_backend, train, cfg, say, "the extended model")
                    arms["extended + adapted"] = _measure(twin, ext_backend, held, say, "the adapted extension")
                extension = {"words_added": len(plan.words), "entries_added": n_new,
                             "init": "focus" if cfg.init in ("focus", "omp") else cfg.init}
                del twin
    params_before = count_parameters(model)
    init_report = new_vocabulary(model, old_view, new_view, old_roles, new_roles, init=cfg.init, aux=aux, k=cfg.k,
                                 text_aux=text_aux, seed=cfg.seed, device=str(_device(cfg)))
    say(f"{init_report['shared']} of {init_report['new_size']} new ids shared with the old vocabulary; "
        f"{init_report['initialised']} initialised by {cfg.init}")
    tokenizers["replaced"] = (new_backend, new_tj)
    arms["replaced"] = _measure(model, new_backend, held, say, "the replaced model")
    if cfg.adapt_steps:
        adaptation["replaced + adapted"] = _adapt(model, new_backend, train, cfg, say, "the replaced model")
        arms["replaced + adapted"] = _measure(model, new_backend, held, say, "the adapted replacement")
    report = {
        "operation": "replace", "model": cfg.model, "out": str(cfg.out), "langs": cfg.langs, "data": cfg.data,
        "tokenizer": {"type": cfg.tokenizer_type, "vocab_size": new_view.info.size,
                      "requested_vocab_size": cfg.vocab_size, "family": new_view.info.family,
                      "special_tokens_carried": specials, "trained_on_sentences": len(all_train)},
        "init": init_report, "extension": extension,
        "parameters": {"before": params_before, "after": count_parameters(model)},
        "adaptation": {"steps": cfg.adapt_steps, "runs": adaptation},
        "heldout_sentences": {lang: len(t) for lang, t in held.items()},
        "training_sentences": {lang: len(t) for lang, t in train.items()},
        "fertility": _fertility(tokenizers, held, cfg.bootstrap, _parallel(sources)),
        "bits_per_char": _summarise(arms, held, cfg.bootstrap, cfg.seed),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    meta = {"format": FORMAT, "operation": "replace", "source_model": cfg.model, "source_folder": str(folder),
            "source_fingerprint": _fingerprint(folder), "tokenizer": report["tokenizer"], "init": init_report,
            "id_map": {"rule": "a new tokenizer: special tokens first (same content), then the trained entries"},
            "corpus_fingerprint": C.fingerprint(sources), "created": _now()}
    content_id = {c: i for c, i in new_view.special.items()}

    def token_new_id(old: int) -> int | None:
        c = old_view.tokens[old] if 0 <= old < len(old_view.tokens) else None
        return content_id.get(c)

    return _write(cfg, "vocab replace", model, new_tj, folder, meta, report, started,
                  {"source": folder, "new_id": token_new_id}, new_backend, _probe(held))


# ============================================================================= terminal
def format_new_vocab(report: dict) -> str:
    """The terminal summary: the vocabulary change, then bits per character per language and arm."""
    from xling.textsafe import term

    ini = report["init"]
    head = (f"transplanted the tokenizer of {term(report['tokenizer_from'])} into {term(report['model'])}"
            if report["operation"] == "transplant" else
            f"replaced the vocabulary of {term(report['model'])} by a {report['tokenizer']['type']} tokenizer trained "
            f"on {report['tokenizer']['trained_on_sentences']:,} sentences")
    lines = [head,
             f"  vocabulary   {ini['old_size']:,} ({ini['old_family']}) -> {ini['new_size']:,} ({ini['new_family']}) "
             f"ids; {ini['shared']:,} shared {ini['shared_by']}; {ini['initialised']:,} initialised by {ini['method']}"
             + (f" in the {ini['aux']} space" + (f" (k={ini['k']})" if ini.get("k") else "") if ini.get("aux") else "")]
    for role, counts in ini["by_role"].items():
        lines.append(f"    {role:10s} {counts}")
    p = report["parameters"]
    lines.append(f"  parameters   {p['before']['total']:,} -> {p['after']['total']:,}")
    bpc = report.get("bits_per_char")
    if bpc:
        lines.append("  bits per character on the same held-out sentences (per-token perplexity is not comparable "
                     "across tokenizers); change vs the original with 95% CI")
        for lang, res in list(bpc["langs"].items()) + [("all", bpc["all"])]:
            for arm, d in res["arms"].items():
                if d.get("bits_per_char") is None:
                    continue
                ci = d.get("delta_bits_per_char_ci")
                delta = (f"  {d['delta_bits_per_char']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "")
                fert = (report.get("fertility") or {}).get(lang, {}).get(_tokenizer_of(arm)) or {}
                tpc = fert.get("tokens_per_char")
                lines.append(f"    {term(lang):10s} {arm:24s} {d['bits_per_char']:.4f} bits/char{delta}"
                             + (f"  tokens/char {tpc:.3f}" if tpc is not None else ""))
    r = report.get("reload") or {}
    if r:
        lines.append(f"  reloaded     tokenizer ids equal {r['tokenizer_ids_equal']}, max |diff| logits "
                     f"{r['max_abs_diff_logits']:.3g}")
    run = f"; results store run {report['run_id']}" if report.get("run_id") else ""
    lines.append(f"wrote {term(report['out'])} ({META_JSON}, {REPORT_JSON}, {REPORT_HTML}){run}")
    return "\n".join(lines)


def _tokenizer_of(arm: str) -> str:
    return arm.split(" + ")[0]


__all__ = ["BPC_NOTE", "MAX_SCORED_TOKENS", "format_new_vocab", "new_vocabulary", "replace", "transplant"]
