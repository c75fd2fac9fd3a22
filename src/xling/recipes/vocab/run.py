"""The ``vocab`` recipes: trim a model to the languages it serves, extend it with new tokens,
compare two trimmed copies.

``trim`` (Ushio et al. 2023, vocabtrimmer; see :mod:`xling.methods.vocab.trim`)
and ``extend`` (FOCUS, Dobler & de Melo 2023; WECHSEL, Minixhofer et al. 2022;
see :mod:`xling.methods.vocab.extend`) each write a standard transformers
folder (safetensors weights, ``config.json``, ``tokenizer.json``) that
``AutoModel``/``AutoTokenizer`` load, plus

* ``xling_vocab.json``: what was done -- the exact old->new id map as ranges of
  kept old ids (trim) or the new tokens and their ids (extend), counts, the
  corpus fingerprint;
* ``vocab_report.json``: parameters and file size before and after, tokenizer
  throughput (tokens per second on the corpus) before and after, corpus
  coverage, and the parity checks.

The folder is written atomically (:func:`xling.io.atomic_path`): every check
that can fail runs before anything is written, and a failure while writing
leaves no partial folder. A run is also added to the results store (command
``vocab-trim`` / ``vocab-extend``, no score rows; the report is in the run's
config).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from xling.errors import XlingError
from xling.harness.sources import load_text_source
from xling.recipes.vocab.config import DEFAULT_MODEL, INITS, ExtendConfig, TrimConfig  # noqa: F401

FORMAT = "xling-vocab/1"
META_JSON = "xling_vocab.json"
REPORT_JSON = "vocab_report.json"
SPEED_TEXTS = 50_000
#: Below this share of the corpus's token occurrences kept, a trim says so (a --top far too small).
LOW_COVERAGE = 0.9


def _log(enabled: bool, msg: str) -> None:
    if enabled:
        print(f"[vocab] {msg}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_out(out: Path, source: Path | None = None, *, overwrite: bool = False, command: str = "vocab") -> None:
    """Refuse the source model folder itself, and what :func:`xling.io.check_output_target` refuses (a file,
    the cache, a non-empty folder xling did not write unless ``overwrite``); an earlier vocab output
    (``xling_vocab.json``, also from before ``.xling-output.json`` existed) is xling's."""
    from xling.io import check_output_target

    out = Path(out)
    if source is not None and out.resolve() == Path(source).resolve():
        raise XlingError(f"--out {out} is the source model folder; choose another folder")
    check_output_target(out, overwrite=overwrite or _vocab_output(out), command=command)


def _vocab_output(out: Path) -> bool:
    """Whether ``out`` is an earlier xling vocab output folder (it holds ``xling_vocab.json``)."""
    return Path(out).is_dir() and (Path(out) / META_JSON).is_file()


def _check_store(path) -> None:
    """Open the results store before any work, so an unusable one fails early (XlingError)."""
    if path is not None:
        from contextlib import closing

        from xling.harness.store import ResultsStore

        with closing(ResultsStore(path)._connect()):
            pass


def _fingerprint(folder: Path) -> str:
    from transformers import AutoConfig

    from xling.models.loading import _fingerprint as fp

    return fp(Path(folder), AutoConfig.from_pretrained(folder))


def _save_store(path, command: str, model: str, fingerprint: str, corpus: str | None, corpus_fp: str | None,
                config: dict, report: dict, started: str) -> str:
    from xling import __version__
    from xling.harness.store import ResultsStore

    run_id = uuid.uuid4().hex[:12]
    ResultsStore(path).add_run({
        "run_id": run_id, "command": command, "model": model, "model_fingerprint": fingerprint,
        "corpus": corpus, "corpus_fingerprint": corpus_fp, "config": {**config, "report": report},
        "started": started, "finished": _now(), "xling_version": __version__,
    })
    return run_id


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _reduction(before: float, after: float) -> float:
    return round(100.0 * (1 - after / before), 2) if before else 0.0


# ============================================================================= trim


def trim(cfg: TrimConfig) -> dict:
    """Trim ``cfg.model`` to ``cfg.langs`` on ``cfg.corpus``; write ``cfg.out``; return the report."""
    import torch

    from xling.io import output_folder
    from xling.methods.vocab import corpus as C
    from xling.methods.vocab.model import config_token_ids, count_parameters, trim_model_, vocab_rows
    from xling.modules.vocab_folder import folder_bytes, load_model_and_tokenizer, save_folder
    from xling.methods.vocab.tokenizer import build_tokenizer, inspect_tokenizer, load_json
    from xling.methods.vocab.trim import compare_states, forward_states, select_ids, tokenization_parity
    from xling.recipes.vocab import decoder as D

    started = _now()
    t_start = time.perf_counter()
    say = lambda m: _log(cfg.progress, m)  # noqa: E731
    _check_out(Path(cfg.out), overwrite=cfg.overwrite, command="vocab trim")  # before any work
    _check_store(cfg.store)
    sources = C.load_sources(cfg.corpus, cfg.langs, load_corpus=load_text_source)
    say(f"corpus: {sum(len(s.texts) for s in sources)} texts from {len(sources)} source(s)")
    first_load: dict = {}
    folder, model, hf_tok = load_model_and_tokenizer(cfg.model, cfg.dtype, timings=first_load)
    _check_out(Path(cfg.out), folder, overwrite=cfg.overwrite, command="vocab trim")
    held: dict[str, list[str]] = {}
    if cfg.heldout and D.is_causal_lm(model):
        sources, held = D.split_heldout(sources, cfg.heldout)
        say(f"held out {sum(map(len, held.values()))} sentences for perplexity and speed")
    tj = load_json(hf_tok)
    info = inspect_tokenizer(tj)
    backend = hf_tok.backend_tokenizer
    rows_before = vocab_rows(model)
    if info.size > rows_before:
        raise XlingError(f"model {cfg.model}: its tokenizer has {info.size} ids but the embedding matrix {rows_before} rows")
    say(f"model: {type(model).__name__}, tokenizer {info.family} with {info.size} ids, {rows_before} embedding rows")

    # 1. count
    encodings = [C.encode(backend, s.texts) for s in sources]
    counts = np.zeros(info.size, dtype=np.float64)
    per_lang: dict[str, dict] = {}
    for s, enc in zip(sources, encodings):
        c = C.count_ids(enc, s.weights, info.size)
        counts += c
        d = per_lang.setdefault(s.lang or "any", {"tokens": 0.0, "unknown": 0.0, "texts": 0})
        d["tokens"] += float(c.sum())
        d["unknown"] += float(c[info.unk_id]) if info.unk_id is not None else 0.0
        d["texts"] += len(s.texts)
    if counts.sum() == 0:
        raise XlingError(f"corpus {cfg.corpus!r} is empty: it tokenises to no tokens")
    for lang in cfg.langs:
        d = per_lang.get(lang)
        if d is None and "any" in per_lang:
            continue
        if d is None or d["tokens"] == 0 or d["tokens"] == d["unknown"]:
            raise XlingError(
                f"language {lang}: zero coverage -- the tokenizer maps none of its corpus text to known tokens"
            )

    # 2. select ids, rebuild the tokenizer
    specials = set(config_token_ids(model)) | {int(i) for i in getattr(hf_tok, "all_special_ids", []) or []}
    plan = select_ids(tj, counts, min_freq=cfg.min_freq, top=cfg.top, extra_required=specials)
    say(f"keeping {plan.new_size} of {info.size} ids ({plan.reasons})")
    new_backend = build_tokenizer(plan.tokenizer_json)
    new_backend.encode_special_tokens = backend.encode_special_tokens
    old_to_new = plan.old_to_new(info.size)

    # 3. tokenisation parity and coverage
    coverage = {"sources": {}, "langs": {}}
    all_old, all_new = [], []
    for s, enc in zip(sources, encodings):
        new_enc = C.encode(new_backend, s.texts)
        coverage["sources"][s.name] = tokenization_parity(enc, new_enc, old_to_new, s.weights)
        if s.kind == "sentences":
            all_old += enc
            all_new += new_enc
    if all_old:
        coverage["sentences"] = tokenization_parity(all_old, all_new, old_to_new)
    for lang, d in per_lang.items():
        coverage["langs"][lang] = {
            "texts": d["texts"], "tokens": round(d["tokens"], 2),
            "unknown_share": round(d["unknown"] / d["tokens"], 6) if d["tokens"] else 0.0,
        }
    kept_mass = float(counts[plan.keep[plan.keep < len(counts)]].sum() / counts.sum())
    coverage["token_occurrences_kept"] = round(kept_mass, 6)
    if kept_mass < LOW_COVERAGE:
        print(f"xling: warning: the trimmed vocabulary keeps {100 * kept_mass:.2f}% of the corpus's token "
              f"occurrences ({plan.new_size:,} tokens{f', --top {cfg.top}' if getattr(cfg, 'top', None) else ''}); "
              f"the rest of the text becomes unknown or byte tokens in the trimmed model", file=sys.stderr, flush=True)

    # 4. throughput before/after on the same texts
    speed_texts = [t for s in sources if s.kind == "sentences" for t in s.texts][:SPEED_TEXTS] or \
        [t for s in sources for t in s.texts][:SPEED_TEXTS]
    speed = {"before": C.tokens_per_second(backend, speed_texts), "after": C.tokens_per_second(new_backend, speed_texts)}

    # 5. hidden-state parity on covered sentences
    check = []
    if cfg.check_sentences:
        pool = sorted(zip(sources, encodings), key=lambda se: se[0].kind != "sentences")
        for s, enc in pool:
            for text, ids in zip(s.texts, enc):
                if len(check) >= cfg.check_sentences:
                    break
                if ids and 0 < len(ids) <= 128 and (old_to_new[np.asarray(ids)] >= 0).all():
                    check.append(text)
    cols = torch.as_tensor(plan.keep, dtype=torch.long)
    old_full = [backend.encode(t).ids for t in check]
    before_states = [forward_states(model, ids, cols) for ids in old_full]
    lm_before = lm_after = None
    if held:  # 5b. decoders: held-out perplexity and tokens/s of the original
        prefix = model.config.bos_token_id if model.config.bos_token_id is not None else model.config.eos_token_id
        prefix = prefix[0] if isinstance(prefix, (list, tuple)) and prefix else prefix
        old_seqs = {lang: D.heldout_ids(backend, texts, prefix) for lang, texts in held.items()}
        covered = D.covered_flags(old_seqs, old_to_new)
        lm_before = D.heldout_pass(model, held, old_seqs, cols, covered, label="original", enabled=cfg.progress)
        say(f"original: held-out perplexity and speed on {sum(map(len, held.values()))} sentences")
    params_before = count_parameters(model)
    trim_model_(model, cols)
    params_after = count_parameters(model)
    new_full = [new_backend.encode(t).ids for t in check]
    ids_equal = sum(int(list(old_to_new[np.asarray(a)]) == list(b)) for a, b in zip(old_full, new_full))
    after_states = [forward_states(model, ids) for ids in new_full]
    parity = compare_states(before_states, after_states) | {"ids_equal_under_map": ids_equal}
    del before_states, after_states
    say(f"parity on {len(check)} covered sentences: max |diff| hidden {parity['max_abs_diff_hidden']:.3g}")
    if held:
        new_prefix = None if prefix is None or old_to_new[prefix] < 0 else int(old_to_new[prefix])
        new_seqs = {lang: D.heldout_ids(new_backend, texts, new_prefix) for lang, texts in held.items()}
        lm_after = D.heldout_pass(model, held, new_seqs, label="trimmed", enabled=cfg.progress)

    # 6. write
    size_before = folder_bytes(folder)
    meta = {
        "format": FORMAT, "operation": "trim", "method": "vocabtrimmer (Ushio et al. 2023)",
        "source_model": cfg.model, "source_folder": str(folder), "source_fingerprint": _fingerprint(folder),
        "tokenizer_family": info.family, "old_vocab_size": info.size, "old_embedding_rows": rows_before,
        "new_vocab_size": plan.new_size, "min_freq": cfg.min_freq, "top": cfg.top, "kept_by_reason": plan.reasons,
        "heldout_sentences": {lang: len(texts) for lang, texts in held.items()},
        "counts": {"token_occurrences": round(float(counts.sum()), 3), "distinct_seen": int((counts > 0).sum()),
                   "distinct_at_min_freq": int((counts >= cfg.min_freq).sum()),
                   "occurrences_kept_share": coverage["token_occurrences_kept"]},
        "id_map": {"rule": "new id = position of the old id in the sorted kept list", "kept_old_id_ranges": plan.ranges()},
        "corpus": {"spec": cfg.corpus, "langs": cfg.langs, "fingerprint": C.fingerprint(sources),
                   "sources": C.describe(sources)},
        "created": _now(),
    }
    report = {
        "operation": "trim", "model": cfg.model, "out": str(cfg.out), "langs": cfg.langs, "corpus": cfg.corpus,
        "tokenizer_family": info.family,
        "vocab": {"before": info.size, "after": plan.new_size, "embedding_rows_before": rows_before,
                  "removed_percent": _reduction(rows_before, plan.new_size), "kept_by_reason": plan.reasons},
        "parameters": {"before": params_before, "after": params_after,
                       "reduction_percent": _reduction(params_before["total"], params_after["total"])},
        "coverage": coverage, "speed": speed, "parity": parity,
    }
    if lm_before is not None:
        report["perplexity"] = D.summarise(lm_before[0], lm_after[0])
        report["model_speed"] = {"before": lm_before[1], "after": lm_after[1]}
    out = Path(cfg.out)
    with output_folder(out, command="vocab trim", overwrite=cfg.overwrite or _vocab_output(out)) as tmp:
        save_folder(model, plan.tokenizer_json, folder, tmp,
                    lambda o: int(old_to_new[o]) if 0 <= o < len(old_to_new) and old_to_new[o] >= 0 else None)
        # 7. the written folder reloads to the same model (tied weights, scaled embeddings, special ids), and
        # how long each folder takes to load (the original's second load, so both read warm files)
        after_load: dict = {}
        _, reloaded, _ = load_model_and_tokenizer(str(tmp), cfg.dtype, timings=after_load)
        if new_full:
            again = forward_states(reloaded, new_full[0])
            ref = forward_states(model, new_full[0])
            keys = ["hidden"] + (["logits"] if "logits" in again and not D.head_missing(model) else [])
            parity["reloaded_max_abs_diff"] = max(float((again[k] - ref[k]).abs().max()) for k in keys)
        del reloaded, model
        before_load: dict = {}
        _, original, _ = load_model_and_tokenizer(str(folder), cfg.dtype, timings=before_load)
        del original
        report["load_seconds"] = {"before": before_load, "after": after_load, "before_first_load": first_load}
        size_after = folder_bytes(tmp)
        report["file_bytes"] = {"before": size_before, "after": size_after,
                                "reduction_percent": _reduction(size_before["total"], size_after["total"])}
        report["seconds"] = round(time.perf_counter() - t_start, 2)
        _write_json(tmp / META_JSON, meta)
        _write_json(tmp / REPORT_JSON, report)
    if cfg.store is not None:
        report["run_id"] = _save_store(cfg.store, "vocab-trim", cfg.model, meta["source_fingerprint"], cfg.corpus,
                                       meta["corpus"]["fingerprint"], _cfg_dict(cfg), report, started)
    return report


def _num(v, spec: str = ".3f") -> str:
    return "n/a" if v is None else format(v, spec)


def _format_decoder(report: dict) -> list[str]:
    """Load time, and for decoders held-out perplexity and model tokens/s, before -> after."""
    lines = []
    ld = report.get("load_seconds")
    if ld:
        lines.append(f"  load time    {ld['before']['total']:.2f} s -> {ld['after']['total']:.2f} s "
                     f"(model {ld['before']['model']:.2f} -> {ld['after']['model']:.2f}, tokenizer "
                     f"{ld['before']['tokenizer']:.2f} -> {ld['after']['tokenizer']:.2f})")
    pp = report.get("perplexity")
    if pp:
        a, c = pp["all"], pp["covered"]
        ci = a.get("delta_bits_per_char_ci")
        lines.append(f"  perplexity   {pp['heldout_sentences']} held-out sentences: {_num(a['perplexity_before'])} -> "
                     f"{_num(a['perplexity_after'])} per token; bits/char {_num(a['bits_per_char_before'], '.4f')} -> "
                     f"{_num(a['bits_per_char_after'], '.4f')}"
                     + (f" (change {a['delta_bits_per_char']:+.4f}, 95% CI {ci[0]:+.4f}..{ci[1]:+.4f})" if ci else ""))
        if c.get("tokens"):
            lines.append(f"    covered    {c['sentences']} sentences: original {_num(c['perplexity_before'])}, "
                         f"renormalised over the kept tokens {_num(c['perplexity_before_renormalised'])}, trimmed "
                         f"{_num(c['perplexity_after'])} (max |diff| NLL {c['max_abs_diff_nll']:.2g})")
    ms = report.get("model_speed")
    if ms:
        f, g = (ms["before"]["forward"], ms["after"]["forward"]), (ms["before"]["generate"], ms["after"]["generate"])
        lines.append(f"  model speed  forward {_num(f[0]['tokens_per_second'], ',.0f')} -> "
                     f"{_num(f[1]['tokens_per_second'], ',.0f')} tokens/s; greedy decoding "
                     f"{_num(g[0]['tokens_per_second'], ',.1f')} -> {_num(g[1]['tokens_per_second'], ',.1f')} tokens/s")
    return lines


def _cfg_dict(cfg) -> dict:
    d = asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _wrote(report: dict) -> str:
    run = f"; results store run {report['run_id']}" if report.get("run_id") else ""
    return f"wrote {report['out']} ({META_JSON}, {REPORT_JSON}){run}"


def _fmt_int(n) -> str:
    return f"{int(n):,}"


def format_trim(report: dict) -> str:
    v, p, f, sp = report["vocab"], report["parameters"], report["file_bytes"], report["speed"]
    cov = report["coverage"]
    lines = [
        f"trimmed {report['model']} ({report['tokenizer_family']}) to {', '.join(report['langs'])} on {report['corpus']}",
        f"  vocabulary   {_fmt_int(v['embedding_rows_before'])} rows -> {_fmt_int(v['after'])} "
        f"({v['removed_percent']}% removed; kept by reason {v['kept_by_reason']})",
        f"  parameters   {_fmt_int(p['before']['total'])} -> {_fmt_int(p['after']['total'])} "
        f"({p['reduction_percent']}% fewer)",
        f"  file size    {f['before']['total'] / 1e6:.1f} MB -> {f['after']['total'] / 1e6:.1f} MB "
        f"({f['reduction_percent']}% smaller)",
        f"  tokenizer    {sp['before']['tokens_per_second']:,.0f} -> {sp['after']['tokens_per_second']:,.0f} tokens/s",
        f"  coverage     {100 * cov['token_occurrences_kept']:.2f}% of corpus token occurrences kept",
    ]
    if "sentences" in cov:
        s = cov["sentences"]
        lines.append(f"  sentences    {100 * s['unchanged']:.2f}% tokenised unchanged ({100 * s['covered']:.2f}% fully covered, "
                     f"{100 * s['unchanged_if_covered']:.2f}% of those unchanged)")
    for name, s in cov["sources"].items():
        extra = f", weighted {100 * s['unchanged_weighted']:.2f}%" if "unchanged_weighted" in s else ""
        lines.append(f"    {name:24s} {s['texts']:>8,} texts, {100 * s['unchanged']:.2f}% unchanged{extra}")
    par = report["parity"]
    lines.append(f"  parity       {par['sentences']} covered sentences: ids equal "
                 f"{par['ids_equal_under_map']}/{par['sentences']}, "
                 f"max |diff| hidden {par['max_abs_diff_hidden']:.3g}"
                 + (f", logits {par['max_abs_diff_logits']:.3g}" if "max_abs_diff_logits" in par else "")
                 + (f"; reloaded folder {par['reloaded_max_abs_diff']:.3g}" if "reloaded_max_abs_diff" in par else ""))
    lines += _format_decoder(report)
    lines.append(_wrote(report))
    return "\n".join(lines)


# ============================================================================= extend


def _pooled(model, ids):
    from xling.methods.vocab.trim import forward_states

    return forward_states(model, ids)["hidden"][-1].mean(dim=0)


def extend(cfg: ExtendConfig) -> dict:
    """Extend ``cfg.model`` with new tokens; write ``cfg.out``; return the report."""
    import torch

    from xling.io import output_folder
    from xling.methods.vocab import corpus as C
    from xling.methods.vocab import init as I
    from xling.methods.vocab.extend import mine_words, plan_extension, read_tokens
    from xling.methods.vocab.model import count_parameters, extend_model_, vocab_rows
    from xling.modules.vocab_folder import folder_bytes, load_model_and_tokenizer, save_folder
    from xling.methods.vocab.tokenizer import build_tokenizer, load_json, word_piece
    from xling.methods.vocab.trim import compare_states, forward_states

    started = _now()
    t_start = time.perf_counter()
    say = lambda m: _log(cfg.progress, m)  # noqa: E731
    _check_out(Path(cfg.out), overwrite=cfg.overwrite, command="vocab extend")  # before any work
    _check_store(cfg.store)
    target = (C.load_sources(cfg.corpus or cfg.target_corpus, cfg.langs, load_corpus=load_text_source)
              if (cfg.corpus or cfg.target_corpus) else [])
    words_given = read_tokens(cfg.tokens) if cfg.tokens else None
    folder, model, hf_tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    _check_out(Path(cfg.out), folder, overwrite=cfg.overwrite, command="vocab extend")
    tj = load_json(hf_tok)
    backend = hf_tok.backend_tokenizer
    rows_before = vocab_rows(model)

    # 1. the new words
    texts = [t for s in target for t in s.texts]
    weights = np.concatenate([s.weights if s.weights is not None else np.ones(len(s.texts)) for s in target]) if target else None
    mined = None
    if words_given is None:
        mined = mine_words(backend, tj, texts, weights, cfg.num_tokens, cfg.min_count)
        words = [c.word for c in mined]
        if not words:
            raise XlingError(f"no word in corpus {cfg.corpus!r} is over-segmented and seen {cfg.min_count}+ times; "
                             "nothing to add")
    else:
        words = words_given
    plan = plan_extension(backend, tj, words)
    if not plan.added:
        raise XlingError(f"no new tokens to add: all {len(words)} words are already tokens or are not single words "
                         f"for this tokenizer")
    info = plan.info
    if info.size > rows_before:
        raise XlingError(f"model {cfg.model}: its tokenizer has {info.size} ids but the embedding matrix {rows_before} rows")
    new_backend = build_tokenizer(plan.tokenizer_json)
    new_backend.encode_special_tokens = backend.encode_special_tokens
    new_ids = plan.new_ids
    say(f"adding {len(plan.words)} words ({len(new_ids)} vocabulary entries) to a {info.family} tokenizer of {info.size} ids")
    single = sum(1 for w, p in plan.words
                 if new_backend.encode(w, add_special_tokens=False).ids == [plan.added[p]]
                 or new_backend.encode(" " + w, add_special_tokens=False).ids == [plan.added[p]])

    # 2. initialisation plan
    excluded = set(info.special_ids) | set(info.added_ids)
    candidates = [i for i in range(min(info.size, rows_before)) if i not in excluded]
    init_meta: dict = {"method": cfg.init}
    fallback: list[int] = []
    weights_plan = None
    if cfg.init in ("mean", "focus", "wechsel"):
        weights_plan = I.mean_plan(backend, plan.added)
    if cfg.init in ("focus", "wechsel"):
        tgt_seqs = C.encode(new_backend, texts)
        tgt_aux = I.ppmi_svd(tgt_seqs, cfg.aux_dim, seed=cfg.seed, weights=weights)
        if cfg.init == "focus":
            p, fallback = I.focus_plan(tgt_aux, new_ids, candidates)
            init_meta |= {"auxiliary": "PPMI+SVD on the target text tokenised with the new tokenizer",
                          "aux_dim": int(tgt_aux.vectors.shape[1]), "aux_tokens": int(len(tgt_aux.ids))}
        else:
            from xling.data.dictionaries import load_dictionary

            src_sources = C.load_sources(cfg.source_corpus or cfg.corpus or cfg.target_corpus, [cfg.source_lang],
                                         load_corpus=load_text_source)
            src_texts = [t for s in src_sources for t in s.texts]
            src_w = np.concatenate([s.weights if s.weights is not None else np.ones(len(s.texts)) for s in src_sources])
            src_aux = I.ppmi_svd(C.encode(backend, src_texts), cfg.aux_dim, seed=cfg.seed, weights=src_w)
            d = min(src_aux.vectors.shape[1], tgt_aux.vectors.shape[1])
            src_aux.vectors, tgt_aux.vectors = src_aux.vectors[:, :d], tgt_aux.vectors[:, :d]
            pairs_words = load_dictionary(cfg.dictionary, cfg.source_lang, cfg.langs[0])
            from xling.methods.vocab.extend import word_counts
            from xling.methods.vocab.tokenizer import inspect_tokenizer

            src_words, tgt_words = set(word_counts(src_texts, min_len=1)), set(word_counts(texts, min_len=1))
            new_info = inspect_tokenizer(plan.tokenizer_json)
            pairs = []
            for a, b in pairs_words:
                if a not in src_words or b not in tgt_words:
                    continue
                pa, pb = word_piece(backend, tj, a, info), word_piece(new_backend, plan.tokenizer_json, b, new_info)
                if pa is None or pb is None:
                    continue
                pairs.append(([t.id for t in backend.model.tokenize(pa)], [t.id for t in new_backend.model.tokenize(pb)]))
            W, fit = I.align_spaces(src_aux, tgt_aux, pairs)
            p, fallback = I.wechsel_plan(src_aux, tgt_aux, W, new_ids, candidates)
            init_meta |= {"auxiliary": "PPMI+SVD per language; Procrustes on a bilingual dictionary",
                          "aux_dim": d, "dictionary": cfg.dictionary, "dictionary_pairs": len(pairs_words),
                          "k": I.WECHSEL_K, "tau": I.WECHSEL_TAU, **fit}
        weights_plan = {**{i: weights_plan[i] for i in fallback}, **p}
        init_meta["fallback_to_mean"] = len(fallback)
        say(f"{cfg.init}: {len(new_ids) - len(fallback)} tokens initialised, {len(fallback)} fell back to mean")

    # 3. representation check (original model) and tokenisation change
    check_changed, check_same = [], []
    if cfg.check_sentences and target:
        for s in target:
            if s.kind != "sentences":
                continue
            for t in s.texts:
                a, b = backend.encode(t).ids, new_backend.encode(t).ids
                if len(a) > 128:
                    continue
                if a != b and len(check_changed) < cfg.check_sentences:
                    check_changed.append((a, b))
                elif a == b and len(check_same) < min(8, cfg.check_sentences):
                    check_same.append(a)
    before_pooled = [_pooled(model, a) for a, _ in check_changed]
    before_same = [forward_states(model, a) for a in check_same]

    # 4. grow the model
    n_new = len(new_ids)
    first_new = plan.first_new
    new_size = max(rows_before, first_new + n_new)
    gen = torch.Generator().manual_seed(cfg.seed)
    order = [plan.added[p] for p in sorted(plan.added, key=plan.added.get)]

    def rows(vt, old):
        if cfg.init == "random":
            fresh = I.random_rows(old, vt.dim, n_new, gen, is_bias=vt.role == "bias")
        else:
            fresh = I.combine_rows(old, vt.dim, weights_plan, order)
        tail = first_new + n_new
        if rows_before > tail:
            fresh = torch.cat([fresh, old.narrow(vt.dim, tail, rows_before - tail)], dim=vt.dim)
        return fresh

    params_before = count_parameters(model)
    extend_model_(model, new_size, rows, first_new)
    params_after = count_parameters(model)
    after_pooled = [_pooled(model, b) for _, b in check_changed]
    cos = [float(torch.nn.functional.cosine_similarity(x, y, dim=0)) for x, y in zip(before_pooled, after_pooled)]
    parity = compare_states(before_same, [forward_states(model, a) for a in check_same])
    representation = {"changed_sentences": len(cos),
                      "mean_cosine_to_original": round(float(np.mean(cos)), 6) if cos else None,
                      "min_cosine_to_original": round(float(np.min(cos)), 6) if cos else None,
                      "unchanged_sentences_parity": parity}

    # 5. tokenizer statistics
    stat_texts = texts[:SPEED_TEXTS] if texts else list(words)
    enc_old, enc_new = C.encode(backend, stat_texts), C.encode(new_backend, stat_texts)
    new_set = set(new_ids)
    used = {i for e in enc_new for i in e if i in new_set}
    fertility = {"tokens_before": int(sum(map(len, enc_old))), "tokens_after": int(sum(map(len, enc_new))),
                 "texts": len(stat_texts), "new_tokens_used": len(used)}
    fertility["reduction_percent"] = _reduction(fertility["tokens_before"], fertility["tokens_after"])
    speed = {"before": C.tokens_per_second(backend, stat_texts), "after": C.tokens_per_second(new_backend, stat_texts)}

    # 6. write
    size_before = folder_bytes(folder)
    meta = {
        "format": FORMAT, "operation": "extend", "init": init_meta, "source_model": cfg.model,
        "source_folder": str(folder), "source_fingerprint": _fingerprint(folder), "tokenizer_family": info.family,
        "old_vocab_size": info.size, "old_embedding_rows": rows_before, "new_embedding_rows": new_size,
        "id_map": {"rule": "old ids unchanged; new tokens appended", "first_new_id": first_new},
        "new_tokens": [{"word": w, "piece": p, "id": plan.added[p]} for w, p in plan.words],
        "intermediate_tokens": sorted(set(plan.added) - {p for _, p in plan.words}),
        "skipped": plan.skipped,
        "corpus": ({"spec": cfg.corpus or cfg.target_corpus, "langs": cfg.langs, "fingerprint": C.fingerprint(target),
                    "sources": C.describe(target)} if target else None),
        "mined": [{"word": c.word, "count": c.count, "pieces_before": c.pieces} for c in mined] if mined else None,
        "created": _now(),
    }
    report = {
        "operation": "extend", "model": cfg.model, "out": str(cfg.out), "init": init_meta, "tokenizer_family": info.family,
        "vocab": {"before": info.size, "after": info.size + n_new, "embedding_rows_before": rows_before,
                  "embedding_rows_after": new_size, "words_added": len(plan.words), "entries_added": n_new,
                  "words_single_token": single, "skipped": {k: len(v) for k, v in plan.skipped.items()}},
        "parameters": {"before": params_before, "after": params_after},
        "fertility": fertility, "speed": speed, "representation": representation,
    }
    out = Path(cfg.out)
    with output_folder(out, command="vocab extend", overwrite=cfg.overwrite or _vocab_output(out)) as tmp:
        save_folder(model, plan.tokenizer_json, folder, tmp)
        size_after = folder_bytes(tmp)
        report["file_bytes"] = {"before": size_before, "after": size_after}
        report["seconds"] = round(time.perf_counter() - t_start, 2)
        _write_json(tmp / META_JSON, meta)
        _write_json(tmp / REPORT_JSON, report)
    if cfg.store is not None:
        report["run_id"] = _save_store(cfg.store, "vocab-extend", cfg.model, meta["source_fingerprint"],
                                       cfg.corpus or cfg.target_corpus, meta["corpus"]["fingerprint"] if target else None,
                                       _cfg_dict(cfg), report, started)
    return report


def format_extend(report: dict) -> str:
    v, p, f, sp, fe = report["vocab"], report["parameters"], report["file_bytes"], report["speed"], report["fertility"]
    rep = report["representation"]
    init = report["init"]
    lines = [
        f"extended {report['model']} ({report['tokenizer_family']}) with {v['words_added']} words "
        f"({v['entries_added']} vocabulary entries), init {init['method']}"
        + (f" ({init['fallback_to_mean']} fell back to mean)" if "fallback_to_mean" in init else ""),
        f"  vocabulary   {_fmt_int(v['before'])} -> {_fmt_int(v['after'])} ids; {_fmt_int(v['embedding_rows_before'])} -> "
        f"{_fmt_int(v['embedding_rows_after'])} rows; {v['words_single_token']}/{v['words_added']} words now one token; "
        f"skipped {v['skipped']}",
        f"  parameters   {_fmt_int(p['before']['total'])} -> {_fmt_int(p['after']['total'])}",
        f"  file size    {f['before']['total'] / 1e6:.1f} MB -> {f['after']['total'] / 1e6:.1f} MB",
        f"  tokens       {_fmt_int(fe['tokens_before'])} -> {_fmt_int(fe['tokens_after'])} on {fe['texts']:,} texts "
        f"({fe['reduction_percent']}% fewer; {fe['new_tokens_used']} new tokens used)",
        f"  tokenizer    {sp['before']['tokens_per_second']:,.0f} -> {sp['after']['tokens_per_second']:,.0f} tokens/s",
    ]
    if rep["changed_sentences"]:
        lines.append(f"  representation  {rep['changed_sentences']} retokenised sentences: cosine to the original "
                     f"mean {rep['mean_cosine_to_original']:.4f}, min {rep['min_cosine_to_original']:.4f}")
    par = rep["unchanged_sentences_parity"]
    if par["sentences"]:
        lines.append(f"  parity       {par['sentences']} unchanged sentences: max |diff| hidden {par['max_abs_diff_hidden']:.3g}")
    lines.append(_wrote(report))
    return "\n".join(lines)


# ============================================================================= compare
def compare(model: str, reference: str, base: str | None = None, out: str | Path | None = None) -> dict:
    """Compare two trimmed copies (see :mod:`xling.methods.vocab.compare`); optionally write JSON."""
    from xling.io import atomic_write_text
    from xling.methods.vocab.compare import compare_models
    from xling.modules.vocab_folder import load_model_and_tokenizer

    _, a, ta = load_model_and_tokenizer(model)
    _, b, tb = load_model_and_tokenizer(reference)
    mb = tbase = None
    if base is not None:
        _, mb, tbase = load_model_and_tokenizer(base)
    res = {"model": model, "reference": reference, "base": base} | compare_models(a, ta, b, tb, mb, tbase)
    for name in (model, reference):
        meta = _vocab_meta(name)
        if meta:
            res.setdefault("xling_vocab", {})[name] = {k: meta.get(k) for k in ("operation", "corpus", "min_freq", "top")}
    if out is not None:
        atomic_write_text(out, json.dumps(res, indent=2, ensure_ascii=False, default=str) + "\n")
    return res


def _vocab_meta(name: str) -> dict | None:
    path = Path(name) / META_JSON
    if path.is_file():
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):  # UnicodeDecodeError is a ValueError
            return None
    return None


# ============================================================================= export
def export(cfg) -> dict:
    """Write the decoder ``cfg.model`` (a folder) as one ``cfg.format`` file ``cfg.out`` (see
    :mod:`xling.modules.gguf_export`); return what was written."""
    import torch

    from xling.deps import require
    from xling.modules.gguf_export import check_target, export_gguf, gguf_architecture
    from xling.modules.vocab_folder import resolve_folder

    require("gguf", "xling vocab export --format gguf")  # before any work
    t_start = time.perf_counter()
    check_target(cfg.out, overwrite=cfg.overwrite)
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = resolve_folder(cfg.model)
    if not list(folder.glob("*.safetensors")):
        raise XlingError(f"model {cfg.model}: no .safetensors weights in {folder} (xling never loads pickled weights)")
    try:
        config = AutoConfig.from_pretrained(folder)
    except ValueError as exc:
        raise XlingError(f"model {cfg.model}: unsupported config ({str(exc).splitlines()[0]})") from None
    gguf_architecture(config)  # an unsupported architecture fails before the weights load
    _log(cfg.progress, f"loading {cfg.model} ({config.model_type})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as exc:
        raise XlingError(f"model {cfg.model}: cannot load its tokenizer ({type(exc).__name__})") from None
    model, info = AutoModelForCausalLM.from_pretrained(folder, config=config, use_safetensors=True,
                                                       dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info.get("missing_keys") or [] if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing:
        raise XlingError(f"model {cfg.model}: the checkpoint lacks {len(missing)} weights of "
                         f"{type(model).__name__} (e.g. {sorted(missing)[0]}); refusing to export random weights")
    model.eval()
    _log(cfg.progress, f"writing {cfg.out} ({cfg.type})")
    summary = export_gguf(model, tokenizer, cfg.out, ftype=cfg.type, overwrite=cfg.overwrite, name=folder.name)
    return {"model": cfg.model, "out": str(summary.path), "format": cfg.format, "type": summary.ftype,
            "architecture": summary.architecture, "tokenizer": summary.tokenizer_model,
            "tokenizer_pre": summary.tokenizer_pre, "vocab_size": summary.vocab_size, "tensors": summary.tensors,
            "parameters": summary.parameters, "bytes": summary.bytes, "notes": summary.notes,
            "seconds": round(time.perf_counter() - t_start, 2)}


def format_export(report: dict) -> str:
    pre = f", pre-tokenizer {report['tokenizer_pre']}" if report.get("tokenizer_pre") else ""
    lines = [f"exported {report['model']} as {report['format']} {report['type']}: llama.cpp architecture "
             f"{report['architecture']}, tokenizer {report['tokenizer']}{pre}, {_fmt_int(report['vocab_size'])} "
             f"tokens, {report['tensors']} tensors, {_fmt_int(report['parameters'])} parameters"]
    lines += [f"  note: {n}" for n in report.get("notes") or []]
    lines.append(f"wrote {report['out']} ({report['bytes'] / 1e6:.1f} MB)")
    return "\n".join(lines)
