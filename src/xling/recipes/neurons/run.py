"""``xling neurons``: language-specific neurons (LAPE) and what switching them off does.

Tang et al. 2024, "Language-Specific Neurons: The Key to Multilingual Capabilities in Large
Language Models". Steps:

1. **Count.** Per language, the tokens of the corpus's counting part (every sentence but the
   held-out ones, up to ``--max-tokens`` tokens) run through the model; forward hooks on each
   block's feed-forward activation (:mod:`xling.engine.neurons`) count, per neuron, the tokens on
   which it is positive. Memory ``O(layers x d_ff x languages)``.
2. **Select** by LAPE exactly as the released code does (:func:`xling.methods.neurons.select_lape`;
   the rates are options).
3. **Ablate** (``--ablate``): for every language A, set A's neurons to 0 and measure the change of
   perplexity on the held-out sentences of every language B, as ``Delta = log PPL_ablated - log
   PPL_base`` (nats per token), with a 95% paired bootstrap interval over held-out sentences. The
   paper's control: a random set of the same size in every layer (seeded). The diagonal dominates
   when Delta(A, A) exceeds every Delta(A, B != A) and the random control's Delta(A, A).

Outputs: ``activations.safetensors`` (per language ``<lang>.n``, a scalar token count, and
``<lang>.over_zero``, layers x d_ff counts of positive activations, as the authors store them),
``neurons.json`` (``{lang: {layer: [neuron ids]}}``), ``counts.csv`` (neurons per language and
layer), ``overlap.csv`` (Jaccard between languages' neuron sets), with ``--ablate``
``ablation.csv`` (A, B, condition, delta, interval), ``run.json`` and ``report.html``.

Links (``correlations.csv``: what, n, pearson, ci_low, ci_high, spearman; 95% percentile bootstrap of
Pearson over the points): the Jaccard overlap of each unordered language pair against each of the six
URIEL distances of the pair (:func:`xling.data.typology.distances`, the ``typology`` extra; a pair
without a distance is dropped and counted, never filled in), and, when the results store holds an
align run of the same model on a corpus of the same collection, the overlap of each language's set
with the align run's pivot (English) against that language's MEXA (Kargaran et al. 2024) at the
run's best layer (highest mean MEXA over languages).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.methods.stats import delta_log_ppl
from xling.recipes.neurons.config import DEFAULT_LANGS, DEFAULT_OUT, NeuronsConfig  # noqa: F401


@dataclasses.dataclass
class NeuronsResult:
    config: NeuronsConfig
    langs: list[str]
    n: dict[str, int]
    over_zero: dict[str, torch.Tensor]
    neurons: dict[str, dict[int, list[int]]]
    counts: list[dict]
    overlap: list[dict]
    ablation: list[dict]
    verdict: list[str]
    seconds: float
    started: str
    correlations: list[dict] = dataclasses.field(default_factory=list)
    link_notes: list[str] = dataclasses.field(default_factory=list)


def _batches(tok, texts: list[str], batch_size: int, max_length: int):
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        yield idx, enc["input_ids"], enc["attention_mask"]


def _nll(model, tok, texts, batch_size, max_length, device, progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sentence: summed next-token negative log-likelihood (nats) and predicted-token count."""
    nll = torch.zeros(len(texts), dtype=torch.float64)
    cnt = torch.zeros(len(texts), dtype=torch.float64)
    with torch.no_grad():
        for idx, ids, mask in _batches(tok, texts, batch_size, max_length):
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = ids[:, 1:]
            m = mask[:, 1:].bool()
            lp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
            nll[idx] = (-(lp * m)).sum(dim=1).double().cpu()
            cnt[idx] = m.sum(dim=1).double().cpu()
            if progress is not None:
                progress(len(idx))
    return nll, cnt


def _progress(cfg, lm, model, tokens: int, passes: int, n_langs: int):
    """The estimate line (:mod:`xling.engine.estimate`: ``tokens`` through the model, the ablation passes with the LM
    head counted as part of the model) and a progress bar over sentence passes; ``None`` with ``--quiet``."""
    if not cfg.progress:
        return None
    from tqdm.auto import tqdm

    from xling.engine.estimate import current_load, estimate_line, estimate_seconds, forward_params, model_params, say

    device = next(model.parameters()).device.type
    device = "cuda" if device == "cuda" else "cpu"
    load = current_load()
    secs = estimate_seconds(tokens, forward_params(model.config, model), device=device, load=load)
    say(estimate_line("neurons", model=cfg.model, params=model_params(model.config, model), seconds=secs,
                      device=device, langs=n_langs, texts=passes, text_word="sentence run", load=load))
    return tqdm(total=passes, unit="sent", desc="neurons", file=sys.stderr, dynamic_ncols=True)


def neurons(config: NeuronsConfig | None = None, **kwargs) -> NeuronsResult:
    """Run the neurons recipe (see the module doc)."""
    from xling.engine.neurons import ActivationCounter, NeuronAblation, find_activations
    from xling.harness.sources import load_text_source
    from xling.methods.neurons import jaccard_matrix, select_lape
    from xling.models.heads import load_with_head
    from xling.models.loading import load_model

    cfg = config if config is not None else NeuronsConfig(**kwargs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    from xling.harness.outputs import preflight

    preflight(cfg, "neurons")  # a folder that is not xling's, an unusable store: refused before any work
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    if not lm.is_decoder:
        raise XlingError(f"neurons: {cfg.model} is an encoder; LAPE and perplexity need a decoder with its LM head")
    from xling.data.langcodes import normalize_lang

    corpus = load_text_source(cfg.data, langs=cfg.langs or DEFAULT_LANGS)
    langs = []
    for x in cfg.langs or DEFAULT_LANGS:
        code = corpus.resolve(normalize_lang(x))
        if code is None:
            raise XlingError(f"neurons: language {x} is not in corpus {corpus.name}; it has: {', '.join(corpus.langs)}")
        if code not in langs:
            langs.append(code)
    if len(langs) < 2:
        raise XlingError("neurons: need at least 2 languages")
    if len(corpus) <= cfg.held_out + 10:
        raise XlingError(f"neurons: corpus {corpus.name} has {len(corpus)} sentences; need more than --held-out "
                         f"{cfg.held_out} + 10 (some to count on)")
    model = load_with_head(lm)
    tok = lm.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    tok.padding_side = "right"
    device = next(model.parameters()).device
    _, acts, d_ff = find_activations(model)
    n_layers = len(acts)
    if cfg.progress:
        print(f"xling: neurons: {len(langs)} languages x up to {cfg.max_tokens:,} tokens through {n_layers} layers "
              f"x {d_ff} neurons of {cfg.model}", file=sys.stderr, flush=True)
    n_tok: dict[str, int] = {}
    over: dict[str, torch.Tensor] = {}
    held: dict[str, list[str]] = {}
    counting: dict[str, list[str]] = {}
    tokens = 0
    for lang in langs:
        sents = corpus.sentences[lang]
        held[lang] = sents[: cfg.held_out]
        pool = sents[cfg.held_out:]
        # the counting texts: sentences in corpus order until the token budget is met
        texts, total = [], 0
        for s in pool:
            k = len(tok(s, add_special_tokens=True, truncation=True, max_length=cfg.max_length)["input_ids"])
            if total + k > cfg.max_tokens and texts:
                break
            texts.append(s)
            total += k
        counting[lang] = texts
        tokens += total
    passes = sum(len(v) for v in counting.values())
    if cfg.ablate:  # the unablated perplexities, then each language's set and its random control on every language
        held_tokens = sum(len(tok(x, add_special_tokens=True, truncation=True, max_length=cfg.max_length)["input_ids"])
                          for lang in langs for x in held[lang])
        tokens += held_tokens * (1 + 2 * len(langs))
        passes += sum(len(v) for v in held.values()) * (1 + 2 * len(langs))
    bar = _progress(cfg, lm, model, tokens, passes, len(langs))
    for lang in langs:
        # counting needs no logits: the base model runs the blocks without the LM head (262k x d per token on Gemma)
        base = getattr(model, "base_model", model)
        counter = ActivationCounter(base)
        with counter.attach(base):
            for idx, ids, mask in _batches(tok, counting[lang], cfg.batch_size, cfg.max_length):
                counter.run(base, ids.to(device), mask.to(device))
                if bar is not None:
                    bar.update(len(idx))
        n_tok[lang] = counter.n
        over[lang] = counter.over_zero.cpu()
    sel = select_lape(torch.tensor([n_tok[x] for x in langs]), torch.stack([over[x] for x in langs], dim=-1),
                      top_rate=cfg.top_rate, filter_rate=cfg.filter_rate, activation_bar_ratio=cfg.activation_bar_ratio)
    chosen = {lang: {layer: sel.neurons[k][layer] for layer in range(n_layers)} for k, lang in enumerate(langs)}
    counts = [{"lang": lang, "layer": layer, "neurons": len(chosen[lang][layer])} for lang in langs for layer in range(n_layers)]
    sets = [{(layer, i) for layer, ids in chosen[lang].items() for i in ids} for lang in langs]
    jac = jaccard_matrix(sets)
    overlap = [{"lang_a": a, "lang_b": b, "jaccard": float(jac[i, j])} for i, a in enumerate(langs) for j, b in enumerate(langs)]
    ablation: list[dict] = []
    verdict: list[str] = []
    if cfg.ablate:
        tick = bar.update if bar is not None else None
        base = {b: _nll(model, tok, held[b], cfg.batch_size, cfg.max_length, device, tick) for b in langs}
        rng = random.Random(cfg.seed)
        for a in langs:
            rand_set = {layer: sorted(rng.sample(range(d_ff), len(ids))) for layer, ids in chosen[a].items()}
            for cond, neuron_set in (("language", chosen[a]), ("random", rand_set)):
                with NeuronAblation(model, neuron_set):
                    for b in langs:
                        abl = _nll(model, tok, held[b], cfg.batch_size, cfg.max_length, device, tick)
                        d, lo, hi = delta_log_ppl(base[b], abl, cfg.bootstrap, cfg.seed)
                        ablation.append({"ablated": a, "lang": b, "condition": cond, "neurons": sum(len(v) for v in neuron_set.values()),
                                         "delta_log_ppl": d, "ci_low": lo, "ci_high": hi,
                                         "ppl_base": math.exp(base[b][0].sum().item() / base[b][1].sum().item())})
        verdict = diagonal_verdict(ablation, langs)
    if bar is not None:
        bar.close()
    correlations, link_notes = overlap_links(cfg, langs, jac, corpus.name)
    result = NeuronsResult(cfg, langs, n_tok, over, chosen, counts, overlap, ablation, verdict,
                           time.perf_counter() - t0, started, correlations, link_notes)
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def overlap_links(cfg: NeuronsConfig, langs: list[str], jac, corpus_name: str | None = None) -> tuple[list[dict], list[str]]:
    """Correlations of the Jaccard overlap with URIEL distance (per pair) and with MEXA vs the pivot (per
    language) -- see the module doc; returns (``correlations.csv`` rows, notes). Each note is also one
    ``xling: note:`` line."""
    from xling.deps import available
    from xling.io import note
    from xling.harness.links import align_runs, corpus_family, correlation, mean_by_layer, mexa_table

    rows: list[dict] = []
    notes: list[str] = []
    pairs = [(i, j) for i in range(len(langs)) for j in range(i + 1, len(langs))]
    if not available("urielplus"):
        notes.append("no URIEL correlation: the typological distances need the 'typology' extra "
                      "(pip install 'xling[typology]')")
    else:
        from xling.data import typology

        try:
            dist = typology.distances([(langs[i], langs[j]) for i, j in pairs])
        except XlingError as exc:  # a language URIEL does not know
            notes.append(f"no URIEL correlation: {exc}")
        else:
            for kind in typology.KINDS:
                d = [dist[(langs[i], langs[j])].get(kind) for i, j in pairs]
                d = [float("nan") if v is None else float(v) for v in d]
                rows.append(correlation(f"jaccard ~ URIEL {kind} distance", [float(jac[i, j]) for i, j in pairs], d,
                                        cfg.bootstrap, cfg.seed) | {"unit": "pairs"})
    if cfg.store is not None:
        runs = align_runs(cfg.store, cfg.model)
        families = {corpus_family(cfg.data), corpus_family(corpus_name)}
        same = [r for r in runs if corpus_family(r.get("corpus")) in families]
        fam = corpus_family(cfg.data)
        hint = f"xling align --model {cfg.model} --data {'bible:mexa' if fam == 'bible' else cfg.data}"
        if not same:
            where = (f" (only on other corpora: {', '.join(dict.fromkeys(str(r.get('corpus')) for r in runs))})"
                     if runs else "")
            notes.append(f"no MEXA correlation: the results store {cfg.store} has no align run of {cfg.model} on "
                         f"{corpus_name or cfg.data}{where}; run `{hint}` to add it")
        else:
            from xling.data.langcodes import normalize_lang

            run = same[-1]
            table = mexa_table(cfg.store, run)
            pivot = normalize_lang((run.get("config") or {}).get("pivot") or "eng_Latn")
            by_layer = mean_by_layer(table)
            if pivot not in langs:
                notes.append(f"no MEXA correlation: the align run's pivot {pivot} is not among the languages")
            elif not by_layer:
                notes.append(f"no MEXA correlation: align run {run['run_id']} has no MEXA scores")
            else:
                best = max(by_layer, key=by_layer.get)
                p = langs.index(pivot)
                others = [k for k, x in enumerate(langs) if k != p]
                row = correlation(f"jaccard with {pivot} ~ MEXA (align run {run['run_id']} on {run.get('corpus')}, "
                                  f"layer {best})", [float(jac[p, k]) for k in others],
                                  [table.get(langs[k], {}).get(best, float("nan")) for k in others], cfg.bootstrap, cfg.seed)
                rows.append(row | {"unit": "languages"})
    for n in notes:
        note(f"neurons: {n}")
    return rows, notes


def diagonal_verdict(ablation: list[dict], langs: list[str]) -> list[str]:
    """One sentence per ablated language: does its own perplexity rise most, beyond the others' and the control's intervals?"""
    get = {(r["ablated"], r["lang"], r["condition"]): r for r in ablation}
    out = []
    for a in langs:
        own = get[(a, a, "language")]
        others = [get[(a, b, "language")] for b in langs if b != a]
        rand = get[(a, a, "random")]
        if own["neurons"] == 0:
            out.append(f"{a}: no language-specific neurons selected; nothing to ablate")
            continue
        top_other = max(others, key=lambda r: r["delta_log_ppl"])
        beats_others = own["ci_low"] > top_other["ci_high"]
        beats_rand = own["ci_low"] > rand["ci_high"]
        word = "dominates" if beats_others and beats_rand else "largest but within noise" if \
            own["delta_log_ppl"] > top_other["delta_log_ppl"] and own["delta_log_ppl"] > rand["delta_log_ppl"] else "does not dominate"
        out.append(f"{a}: own Delta {own['delta_log_ppl']:+.3f} [{own['ci_low']:+.3f}, {own['ci_high']:+.3f}] vs largest other "
                   f"({top_other['lang']}) {top_other['delta_log_ppl']:+.3f} and random {rand['delta_log_ppl']:+.3f}: {word}")
    return out


def write_outputs(result: NeuronsResult, out: Path) -> None:
    from safetensors.torch import save_file

    from xling.io import output_folder
    from xling.harness.outputs import rows_to_csv

    with output_folder(out, command="neurons", overwrite=result.config.overwrite) as tmp:  # built aside, swapped in
        tmp.mkdir()
        tensors = {}
        for lang in result.langs:
            tensors[f"{lang}.n"] = torch.tensor(result.n[lang], dtype=torch.int64)
            tensors[f"{lang}.over_zero"] = result.over_zero[lang].to(torch.int64).contiguous()
        save_file(tensors, str(tmp / "activations.safetensors"), metadata={"format": "xling-activations/1",
                                                                          "model": result.config.model})
        (tmp / "neurons.json").write_text(json.dumps({lang: {str(layer): ids for layer, ids in per.items()}
                                                      for lang, per in result.neurons.items()}), encoding="utf-8")
        (tmp / "counts.csv").write_text(rows_to_csv(result.counts, ["lang", "layer", "neurons"]), encoding="utf-8")
        (tmp / "overlap.csv").write_text(rows_to_csv(result.overlap, ["lang_a", "lang_b", "jaccard"]), encoding="utf-8")
        (tmp / "correlations.csv").write_text(rows_to_csv(result.correlations, ["what", "n", "pearson", "ci_low", "ci_high",
                                                                                "spearman"]), encoding="utf-8")
        if result.ablation:
            (tmp / "ablation.csv").write_text(rows_to_csv(result.ablation, ["ablated", "lang", "condition", "neurons",
                                                                            "delta_log_ppl", "ci_low", "ci_high", "ppl_base"]),
                                              encoding="utf-8")
        run = {"command": "neurons", "model": result.config.model, "config": dataclasses.asdict(result.config),
               "langs": result.langs, "tokens": result.n, "verdict": result.verdict, "correlations": result.correlations,
               "link_notes": result.link_notes, "started": result.started,
               "seconds": round(result.seconds, 2)}
        (tmp / "run.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
        (tmp / "report.html").write_text(render_report(result), encoding="utf-8")


def _matrix_table(title: str, rows: list[str], cols: list[str], value, lo: float, hi: float, fmt_cell) -> str:
    from xling.harness.html import color, esc

    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            v = value(r, c)
            t = 0.0 if v != v or hi == lo else (v - lo) / (hi - lo)
            bg = color(t)
            fg = "#000" if t > 0.55 else "#fff"
            cells.append(f'<td style="background:{bg};color:{fg};text-align:right">{esc(fmt_cell(v))}</td>')
        body.append(f"<tr><th>{esc(r)}</th>{''.join(cells)}</tr>")
    return f"<h2>{esc(title)}</h2><table><tr><th></th>{head}</tr>{''.join(body)}</table>"


def render_report(result: NeuronsResult) -> str:
    from xling.harness.html import esc, headline_html, page

    langs = result.langs
    n_layers = len(next(iter(result.neurons.values())))
    total = {lang: sum(len(v) for v in result.neurons[lang].values()) for lang in langs}
    by_layer = [sum(len(result.neurons[lang][layer]) for lang in langs) for layer in range(n_layers)]
    third = max(1, n_layers // 3)
    edge = sum(by_layer[:third]) + sum(by_layer[-third:])
    share = edge / max(1, sum(by_layer))
    head = [f"{esc(result.config.model)}: {sum(total.values())} language-specific neuron assignments over {len(langs)} "
            f"languages ({', '.join(f'{esc(x)} {total[x]}' for x in langs)}).",
            f"{share:.0%} of them in the bottom and top thirds of the layers (Tang et al. report most in the bottom and top layers)."]
    head += [esc(v) for v in result.verdict]
    counts = {(r["lang"], r["layer"]): r["neurons"] for r in result.counts}
    cmax = max(counts.values()) if counts else 1
    parts = [f"<h1>Language-specific neurons: {esc(result.config.model)}</h1>", headline_html(head),
             _matrix_table("Selected neurons per language (rows) and layer (columns)", langs, [str(x) for x in range(n_layers)],
                           lambda r, c: counts[(r, int(c))], 0, cmax, lambda v: f"{v:d}")]
    jac = {(r["lang_a"], r["lang_b"]): r["jaccard"] for r in result.overlap}
    parts.append(_matrix_table("Overlap of neuron sets (Jaccard)", langs, langs, lambda r, c: jac[(r, c)], 0, 1,
                               lambda v: "-" if v != v else f"{v:.2f}"))
    parts.append(_links_html(result))
    if result.ablation:
        get = {(r["ablated"], r["lang"], r["condition"]): r["delta_log_ppl"] for r in result.ablation}
        vals = [v for v in get.values() if v == v]
        lo, hi = min(vals), max(vals)
        for cond, title in (("language", "Ablating a language's neurons (rows): change of log perplexity of each language (columns), nats/token"),
                            ("random", "Control: the same number of random neurons per layer")):
            parts.append(_matrix_table(title, langs, langs, lambda r, c, cond=cond: get[(r, c, cond)], lo, hi,
                                       lambda v: f"{v:+.3f}"))
    parts.append("<p>Method: Tang et al. 2024 (LAPE), selection as the released identify.py; activation = the MLP's "
                 "activation function output (act(gate) for gated MLPs). Files: activations.safetensors, neurons.json, "
                 "counts.csv, overlap.csv, ablation.csv.</p>")
    return page(f"xling neurons: {result.config.model}", "".join(parts))


def _links_html(result: NeuronsResult) -> str:
    from xling.harness.links import describe
    from xling.harness.html import esc

    items = [f"<li>{esc(describe(r, r.get('unit', 'pairs')))}</li>" for r in result.correlations]
    items += [f"<li>{esc(n)}</li>" for n in result.link_notes]
    return ("<h2>Overlap against typology and alignment</h2><ul>" + "".join(items) + "</ul>"
            "<p>Pearson with a 95% percentile bootstrap interval over the pairs (languages); correlations.csv.</p>")


def format_summary(result: NeuronsResult) -> str:
    lines = [f"neurons: {result.config.model}, {len(result.langs)} languages, {result.seconds:.1f} s"]
    for lang in result.langs:
        per = result.neurons[lang]
        lines.append(f"  {lang:10s} {result.n[lang]:>8,} tokens, {sum(len(v) for v in per.values()):>6} neurons "
                     f"(by layer: {' '.join(str(len(per[layer])) for layer in sorted(per))})")
    lines.extend("  " + v for v in result.verdict)
    from xling.harness.links import describe

    lines.extend("  " + describe(r, r.get("unit", "pairs")) for r in result.correlations)
    return "\n".join(lines)


__all__ = ["NeuronsConfig", "NeuronsResult", "delta_log_ppl", "diagonal_verdict", "format_summary", "neurons"]
