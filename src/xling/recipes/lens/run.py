"""``xling lens``: the latent language of a decoder, layer by layer (Wendler et al. 2024).

Wendler, Veselovsky, Monea and West 2024, "Do Llamas Work in English? On the Latent Language of
Multilingual Transformers": few-shot word prompts whose answer is a word in the target language;
under the logit lens (:mod:`xling.engine.lens`) an English-centric model gives the *English*
word more probability than the target word in its middle layers, and the target word wins only
in the last layers.

Prompts (built offline from word pairs; nothing here is model-specific):

* ``translation``: ``Français: "fleur" - Deutsch: "Blume"`` for ``--shots`` pairs of the source
  language (``--source``, default French, German when French is the target) and the target, then
  the query ``Français: "<word>" - Deutsch: "``;
* ``repetition``: the same with the target word on both sides (``Deutsch: "Blume" - Deutsch: "Blume"``);
* ``cloze``: a sentence of the target language with the word blanked, then the word
  (``Und Gott sprach: Es werde ___! Und es ward Licht.`` / ``___ = "Licht"``), ``--shots`` of them
  and the query sentence. Wendler et al. had GPT-4 write one cloze sentence per word and language;
  offline, xling takes the *shortest verse of the built-in Bible* (22 languages) that contains the
  word (a whole word where the script separates words by spaces, a substring in Japanese and
  Chinese; verses of fewer than 5 words or characters-equivalents skipped) and blanks its first
  occurrence. A word in no verse is dropped and counted (``no_cloze_sentence``).

Answers: the *target* token ids are the first token of the word tokenized alone (when it carries
no leading space), plus every vocabulary token whose text is a non-empty prefix of the word (Wendler et al.
sum over the tokens that begin the word); the *English* ids the same for the English word.

Filters (every one counted in ``prompts.jsonl``'s summary line and the report):

1. words are single words of letters (no digits, spaces or punctuation), at least 2 characters;
2. the target word differs from the English word (after case folding);
3. the target and English id sets are disjoint (the paper keeps prompts whose target and English
   first tokens differ; otherwise both probabilities measure the same tokens);
4. demonstrations never include the query's concept;
5. (cloze) the word occurs in a verse of the target language.

Word pairs come from a TSV file (``--pairs``: a header of language codes, one concept a row,
English included) or from the FreeDict dictionaries (``--pairs freedict``: Debian's
``dict-freedict-eng-<lang>``, fetched once into the cache; the first single-word translation of
each single-word English headword).

With a results store (``--store``) holding an ``align`` run of the same model with the same number of
hidden states, the report adds that run's mean MEXA (Kargaran et al. 2024) over languages at each hidden
state (align's layer index is the hidden-state index) and names the layer where it peaks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import torch

from xling.errors import XlingError
from xling.methods.stats import Resampler, bootstrap_mean, quartiles
from xling.recipes.lens.config import DEFAULT_LANGS, DEFAULT_OUT, TASKS, LensConfig  # noqa: F401 - the recipe's names


def _is_word(w: str) -> bool:
    return len(w) >= 2 and all(unicodedata.category(c)[0] in "LM" for c in w)


def read_pairs_tsv(path: str | Path, langs: list[str]) -> dict[str, dict[str, str]]:
    """``{english word: {lang: word}}`` from a TSV with a header of language codes."""
    from xling.data.langcodes import normalize_lang

    path = Path(path).expanduser()
    if not path.is_file():
        raise XlingError(f"--pairs: no such file: {path}")
    from xling.data.files import read_text

    lines = read_text(path).splitlines()  # bad bytes, a binary file: one line naming the file and line
    if not lines:
        raise XlingError(f"{path}: empty word-pair file")
    header = [normalize_lang(h.strip()) for h in lines[0].split("\t")]
    if "eng_Latn" not in header:
        raise XlingError(f"{path}:1: the header must include English (eng), got {ascii(lines[0][:80])}")
    missing = [lang for lang in langs if lang not in header]
    if missing:
        raise XlingError(f"{path}: no column for {', '.join(missing)} (header: {', '.join(header)})")
    out: dict[str, dict[str, str]] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise XlingError(f"{path}:{n}: {len(cells)} cells, the header has {len(header)}")
        row = {h: c.strip() for h, c in zip(header, cells)}
        out.setdefault(row["eng_Latn"], {k: v for k, v in row.items() if v})
    return out


def freedict_pairs(langs: list[str]) -> dict[str, dict[str, str]]:
    """``{english word: {lang: word}}`` from FreeDict eng-<lang> (the first translation of each headword,
    headwords in lower case)."""
    from xling.data.dictionaries import load_dictionary

    table: dict[str, dict[str, str]] = {}
    for lang in langs:
        pairs = load_dictionary("freedict", "eng", lang.split("_")[0])
        seen: set[str] = set()
        for en, x in pairs:
            # headwords are capitalised in some dictionaries (eng-ara): compare them in lower case
            en, x = en.strip().lower(), x.strip()
            if en in seen:
                continue
            seen.add(en)
            table.setdefault(en, {"eng_Latn": en})[lang] = x
    return table


def english_frequencies(progress: bool = True) -> dict[str, int]:
    """Lower-case word counts of the built-in Bible's English text (31,102 verses), or ``{}`` with a note
    when it cannot be read (then the word order is a seeded sample)."""
    import re
    from collections import Counter

    from xling.io import note

    try:
        from xling.data.bible import bible_corpus

        verses = bible_corpus(["eng"], quiet=not progress).sentences["eng_Latn"]
    except XlingError as exc:
        note(f"lens: no English word frequencies ({exc}); word pairs are sampled instead")
        return {}
    words = Counter()
    for v in verses:
        words.update(w.lower() for w in re.findall(r"[^\W\d_]+", v))
    return dict(words)


def _bible_verses(lang: str, progress: bool) -> list[str]:
    """Every verse of the built-in Bible in ``lang`` (cloze sentences), or one error naming its languages."""
    from xling.data.bible import TRANSLATIONS, bible_corpus
    from xling.data.langcodes import match_lang

    match = match_lang(lang, TRANSLATIONS)  # ara_Arab (macrolanguage) -> arb_Arab, as --data bible does
    if match is None:
        raise XlingError(f"lens --task cloze: the built-in Bible (the cloze sentences) has no {lang}; it has "
                         f"{', '.join(sorted(TRANSLATIONS))}")
    return bible_corpus([match], quiet=not progress).sentences[match]


def _answer_ids(tokenizer, word: str, prefix_index: dict[str, list[int]]) -> list[int]:
    """The first token of ``word`` tokenized alone (unless it carries a leading space: a prompt ending in
    a quote is continued without one) plus every vocabulary token whose text is a non-empty prefix of it."""
    ids: set[int] = set()
    alone = tokenizer(word, add_special_tokens=False)["input_ids"]
    if alone:
        first = tokenizer.decode(alone[:1])
        if first and first == first.lstrip():
            ids.add(int(alone[0]))
    for j in range(1, len(word) + 1):
        ids.update(prefix_index.get(word[:j], ()))
    return sorted(ids)


def _prefix_index(tokenizer) -> dict[str, list[int]]:
    """Decoded text of every vocabulary token (without a leading space) -> ids; byte pieces skipped."""
    index: dict[str, list[int]] = {}
    specials = set(tokenizer.all_special_ids)
    for i in range(len(tokenizer)):
        if i in specials:
            continue
        s = tokenizer.decode([i])
        if not s or "\ufffd" in s or s != s.strip():
            continue
        index.setdefault(s, []).append(i)
    return index


def script_of(text: str) -> str:
    """The Unicode script name of the first letter of ``text`` (LATIN, CYRILLIC, CJK, ...), or ``-``."""
    for ch in text:
        if unicodedata.category(ch)[0] == "L":
            name = unicodedata.name(ch, "")
            return name.split(" ")[0] if name else "-"
    return "-"


def _lang_name(lang: str) -> str:
    import langcodes

    try:
        return langcodes.Language.get(lang.split("_")[0]).autonym().split(" (")[0]
    except Exception:  # noqa: BLE001 - a name is cosmetic; the code stands in
        return lang


def build_prompts(tokenizer, table: dict[str, dict[str, str]], target: str, source: str, task: str,
                  max_prompts: int, shots: int, seed: int, prefix_index: dict[str, list[int]],
                  freq: dict[str, int] | None = None, keep_order: bool = False,
                  cloze: ClozeSentences | None = None):
    """Prompts for one target language; returns (prompts, filter counts). ``cloze`` (task cloze only) finds
    the target-language sentence with the blank for a word."""
    freq = freq or {}
    concepts = []
    counts = {"concepts": 0, "not_single_words": 0, "same_as_english": 0, "overlapping_answer_tokens": 0}
    if task == "cloze":
        counts["no_cloze_sentence"] = 0
    need = [target] if task in ("repetition", "cloze") else [target, source]
    for en in (list(table) if keep_order else sorted(table)):
        row = table[en]
        if not all(lang in row for lang in need):
            continue
        counts["concepts"] += 1
        words = [en] + [row[lang] for lang in need]
        if not all(_is_word(w) for w in words):
            counts["not_single_words"] += 1
            continue
        if row[target].casefold() == en.casefold():
            counts["same_as_english"] += 1
            continue
        concepts.append(en)
    # common words first (Wendler et al. use everyday words; a 270M model knows few rare ones): by the
    # English word's frequency in ``freq`` (the built-in Bible's English text by default), ties and
    # unseen words in a seeded hash order
    if not keep_order:
        concepts.sort(key=lambda w: (-freq.get(w, 0), hashlib.sha256(f"{seed}:{w}".encode()).hexdigest()))
    contexts: dict[str, str] = {}
    if task == "cloze":
        # looked up lazily in frequency order (a substring search over 31k verses per word is slow in
        # Japanese and Chinese): enough words for the prompts, their demonstrations and the later filter
        kept, enough = [], 2 * max_prompts + shots + 20
        for en in concepts:
            if len(kept) >= enough:
                break
            sentence = cloze(table[en][target]) if cloze is not None else None
            if sentence is None:
                counts["no_cloze_sentence"] += 1
                continue
            contexts[en] = sentence
            kept.append(en)
        concepts = kept
    if len(concepts) < shots + 1:
        raise XlingError(f"lens: only {len(concepts)} usable word pairs for {target}; need at least {shots + 1}")
    src_name = _lang_name(target if task == "repetition" else source)
    tgt_name = _lang_name(target)
    left = source if task == "translation" else target
    prompts = []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", True) else []
    for qi, en in enumerate(concepts):
        if len(prompts) >= max_prompts:
            break
        demos = [c for c in concepts if c != en]
        start = (qi * shots) % len(demos)
        demos = (demos[start:] + demos[:start])[:shots]
        if task == "cloze":
            lines = [f'{contexts[d]}\n___ = "{table[d][target]}"\n' for d in demos]
            text = "\n".join(lines) + f'\n{contexts[en]}\n___ = "'
        else:
            lines = [f'{src_name}: "{table[d][left]}" - {tgt_name}: "{table[d][target]}"' for d in demos]
            text = "\n".join(lines) + f'\n{src_name}: "{table[en][left]}" - {tgt_name}: "'
        ids = bos + tokenizer(text, add_special_tokens=False)["input_ids"]
        t_ids = _answer_ids(tokenizer, table[en][target], prefix_index)
        e_ids = _answer_ids(tokenizer, en, prefix_index)
        if not t_ids or not e_ids or set(t_ids) & set(e_ids):
            counts["overlapping_answer_tokens"] += 1
            continue
        prompts.append({"prompt_id": f"{target}-{len(prompts):04d}", "lang": target, "concept": en,
                        "word": table[en][target], "text": text, "input_ids": ids,
                        "target_token_ids": t_ids, "english_token_ids": e_ids})
    counts["prompts"] = len(prompts)
    return prompts, counts


class ClozeSentences:
    """Cloze sentences from a language's verses: for a word, the shortest verse (at least
    :attr:`MIN_WORDS` words, or that many times 2 characters in a script without spaces) in which the
    word occurs exactly once, case-folded, as a whole word (a substring where words are not separated
    by spaces, compared as is), with that occurrence replaced by ``___``; ties by verse order. ``None`` when no verse has it."""

    MIN_WORDS = 5
    UNSPACED = ("jpn_", "zho_", "tha_", "khm_", "lao_", "mya_", "yue_", "wuu_")

    def __init__(self, verses: list[str], lang: str):
        import re

        self.verses = verses
        self.spaced = not lang.startswith(self.UNSPACED)
        self._word = re.compile(r"[^\W\d_]+")
        self._index: dict[str, tuple[int, int]] | None = None

    def _build_index(self) -> dict[str, tuple[int, int]]:
        from collections import Counter

        index: dict[str, tuple[int, int]] = {}
        for i, v in enumerate(self.verses):
            words = [w.casefold() for w in self._word.findall(v)]
            if len(words) < self.MIN_WORDS:
                continue
            for w, n in Counter(words).items():
                if n == 1 and (w not in index or len(v) < index[w][0]):
                    index[w] = (len(v), i)
        return index

    def __call__(self, word: str) -> str | None:
        key = word.casefold()
        if self.spaced:
            if self._index is None:
                self._index = self._build_index()
            hit = self._index.get(key)
            if hit is None:
                return None
            v = self.verses[hit[1]]
            for m in self._word.finditer(v):
                if m.group().casefold() == key:
                    return v[: m.start()] + "___" + v[m.end():]
            return None  # unreachable: the index was built from the same words
        best = None  # scripts without spaces (and without case): a substring, exactly once
        for i, v in enumerate(self.verses):
            if len(v) < 2 * self.MIN_WORDS or (best is not None and len(v) >= best[0]):
                continue
            if v.count(word) == 1:
                best = (len(v), i)
        if best is None:
            return None
        return self.verses[best[1]].replace(word, "___", 1)


@dataclasses.dataclass
class LensRunResult:
    config: LensConfig
    rows: list[dict]
    prompts: list[dict]
    filters: dict[str, dict]
    num_hidden_states: int
    model_name: str
    seconds: float
    started: str
    mexa: dict | None = None


def _progress(cfg: LensConfig, model, prompts: list[dict], n_hidden: int, n_langs: int):
    """The estimate line (the prompts' tokens through the model, plus one unembedding per hidden state and prompt)
    and a progress bar over prompts; ``None`` with ``--quiet``."""
    if not cfg.progress:
        return None
    import sys

    from tqdm.auto import tqdm

    from xling.engine.estimate import current_load, estimate_line, estimate_seconds, forward_params, model_params, say

    device = next(model.parameters()).device.type
    device = "cuda" if device == "cuda" else "cpu"
    emb = model.get_output_embeddings()
    head_params = int(emb.weight.numel()) if emb is not None else 0
    tokens = sum(len(p["input_ids"]) for p in prompts)
    # the body's cost per token, and the lens's unembeddings as n_hidden extra "tokens" through the head alone
    params = forward_params(model.config, model)
    work = tokens + (len(prompts) * n_hidden * head_params) // max(1, params)
    load = current_load()
    secs = estimate_seconds(work, params, device=device, load=load)
    say(estimate_line("lens", model=cfg.model, params=model_params(model.config, model), seconds=secs, device=device,
                      langs=n_langs, texts=len(prompts), text_word="prompt", layers=n_hidden, load=load))
    return tqdm(total=len(prompts), unit="prompt", desc="lens", file=sys.stderr, dynamic_ncols=True)


def lens(config: LensConfig | None = None, **kwargs) -> LensRunResult:
    """Run the lens recipe (see the module doc)."""
    from xling.data.langcodes import normalize_lang
    from xling.engine.lens import logit_lens
    from xling.models.heads import find_lens_head, load_with_head
    from xling.models.loading import load_model

    cfg = config if config is not None else LensConfig(**kwargs)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    from xling.harness.outputs import preflight

    preflight(cfg, "lens")  # a folder that is not xling's, an unusable store: refused before any work
    langs = list(dict.fromkeys(normalize_lang(x) for x in (cfg.langs or DEFAULT_LANGS)))
    if "eng_Latn" in langs:
        raise XlingError("lens: English is the reference answer; choose target languages other than English")
    source = normalize_lang(cfg.source) if cfg.source else None
    need = sorted(set(langs) | ({source} if source else set()) | ({"fra_Latn", "deu_Latn"} if cfg.task == "translation" and not source else set()))
    # the word pairs first: a missing dictionary or a bad file is found before any model is fetched
    table = freedict_pairs(need) if cfg.pairs == "freedict" else read_pairs_tsv(cfg.pairs, need)
    lm = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device, lazy=True, quiet=not cfg.progress)
    if not lm.is_decoder:
        raise XlingError(f"lens: {cfg.model} is an encoder; the logit lens reads a decoder's next-token predictions")
    model = load_with_head(lm)
    head = find_lens_head(model)
    tok = lm.tokenizer
    prefix_index = _prefix_index(tok)
    order = cfg.order or ("frequent" if cfg.pairs == "freedict" else "file")
    freq = english_frequencies(cfg.progress) if order == "frequent" else {}
    all_prompts, filters = [], {}
    for lang in langs:
        src = source or ("deu_Latn" if lang == "fra_Latn" else "fra_Latn")
        if cfg.task == "translation" and src == lang:
            raise XlingError(f"lens: --source {cfg.source} equals the target language {lang}")
        cloze = ClozeSentences(_bible_verses(lang, cfg.progress), lang) if cfg.task == "cloze" else None
        prompts, counts = build_prompts(tok, table, lang, src, cfg.task, cfg.max_prompts, cfg.shots, cfg.seed, prefix_index,
                                        freq, keep_order=(order == "file"), cloze=cloze)
        for p in prompts:
            p["source"] = src if cfg.task == "translation" else lang
        filters[lang] = counts
        all_prompts.extend(prompts)
    if cfg.progress:
        import sys

        print(f"xling: lens: {len(all_prompts)} prompts, {len(langs)} languages, {head.num_hidden_states} hidden states "
              f"of {cfg.model}", file=sys.stderr, flush=True)
    bar = _progress(cfg, model, all_prompts, head.num_hidden_states, len(langs))
    try:
        res = logit_lens(model, [p["input_ids"] for p in all_prompts],
                         {"target": [p["target_token_ids"] for p in all_prompts],
                          "english": [p["english_token_ids"] for p in all_prompts]},
                         batch_size=cfg.batch_size, pad_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
                         head=head, progress=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    rows = []
    for i, p in enumerate(all_prompts):
        tgt_set, en_set = set(p["target_token_ids"]), set(p["english_token_ids"])
        for layer in range(head.num_hidden_states):
            tid = int(res.top_id[i, layer])
            top = tok.decode([tid])
            rows.append({"prompt_id": p["prompt_id"], "lang": p["lang"], "layer": layer,
                         "p_target": float(res.answers["target"][i, layer]),
                         "p_english": float(res.answers["english"][i, layer]),
                         "entropy": float(res.entropy[i, layer]), "top_token": top, "top_prob": float(res.top_prob[i, layer]),
                         "top_script": script_of(top),
                         "top_is": "target" if tid in tgt_set else "english" if tid in en_set else "other"})
    result = LensRunResult(cfg, rows, all_prompts, filters, head.num_hidden_states, cfg.model,
                           time.perf_counter() - t0, started, mexa_per_layer(cfg.store, cfg.model, head.num_hidden_states))
    if cfg.out is not None:
        write_outputs(result, Path(cfg.out))
    return result


def mexa_per_layer(store, model: str, n_hidden: int) -> dict:
    """The latest align run of ``model`` in the store with ``n_hidden`` hidden states: ``{"run_id", "corpus",
    "langs", "layers": {hidden state: mean MEXA over languages}, "peak"}``; else ``{"note": one sentence}``."""
    from xling.harness.links import align_runs, mean_by_layer, mexa_table

    hint = (f"Run xling align --model {model} --data bible:mexa (results store: the default, or this run's --store) "
            f"to add MEXA per layer to this report.")
    if store is None:
        return {"note": "No results store (--store none): no MEXA per layer. " + hint}
    runs = align_runs(store, model)
    usable = []
    for run in runs:
        table = mexa_table(store, run)
        layers = mean_by_layer(table)
        hidden = (run.get("config") or {}).get("num_hidden_states")
        if layers and (hidden == n_hidden if hidden is not None else max(layers) < n_hidden):
            usable.append((run, table, layers))
    if not usable:
        why = f" ({len(runs)} align run(s) of it, none with {n_hidden} hidden states and MEXA scores)" if runs else ""
        return {"note": f"The results store has no align run of {model}{why}. " + hint}
    run, table, layers = usable[-1]
    peak = max(layers, key=layers.get)
    return {"run_id": run["run_id"], "corpus": run.get("corpus"), "langs": len(table), "layers": layers, "peak": peak}


def curves(rows: list[dict]) -> dict[str, dict[str, list[tuple[int, float, float, float]]]]:
    """``{lang: {"target"|"english": [(layer, q25, median, q75), ...]}}``."""
    by: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in rows:
        d = by.setdefault((r["lang"], r["layer"]), {"target": [], "english": []})
        d["target"].append(r["p_target"])
        d["english"].append(r["p_english"])
    out: dict[str, dict[str, list]] = {}
    for (lang, layer), d in sorted(by.items()):
        for k in ("target", "english"):
            out.setdefault(lang, {}).setdefault(k, []).append((layer, *quartiles(d[k])))
    return out


#: A detour needs English to carry probability mass: at a layer where the mean p(English) is below this, English
#: "above the target" is a comparison of two near-zero numbers (Wendler et al. 2024 see English at 0.1-0.4 in the
#: middle layers of Llama-2), and it is reported as such, not as a detour.
DETOUR_FLOOR = 0.01


def english_detour(curve: dict[str, list] | None = None, rows: list[dict] | None = None, lang: str | None = None,
                   reps: int = 1000, seed: int = 0, floor: float = DETOUR_FLOOR, massless: list | None = None) -> list[int]:
    """Layers before the last where English is more probable than the target *beyond noise* (the 95%
    paired bootstrap interval over prompts of mean(p_english - p_target) lies above 0) *and* English carries
    mass (mean p(English) >= ``floor``). Layers that pass the first test but not the second are appended to
    ``massless`` when a list is given.

    Called with ``curve`` only (no per-prompt rows), it falls back to comparing medians."""
    if rows is None:
        last = max(x[0] for x in curve["target"])
        return [t[0] for t, e in zip(curve["target"], curve["english"]) if t[0] < last and e[2] > t[2]]
    by: dict[int, dict[str, float]] = {}
    for r in rows:
        if r["lang"] == lang:
            by.setdefault(r["layer"], {})[r["prompt_id"]] = r["p_english"] - r["p_target"]
    last = max(by)
    rs = Resampler(seed, "torch")
    out = []
    for layer in sorted(by):
        if layer == last:
            continue
        d = torch.tensor(list(by[layer].values()), dtype=torch.float64)
        if d.numel() < 2 or float(d.mean()) <= 0:
            continue
        lo, _ = bootstrap_mean(d, reps, rs)
        if lo > 0:
            p_en = sum(r["p_english"] for r in rows if r["lang"] == lang and r["layer"] == layer) / len(by[layer])
            if p_en >= floor:
                out.append(layer)
            elif massless is not None:
                massless.append(layer)
    return out


def task_performance(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per language at the last hidden state: mean p(target), and the share of prompts whose top token
    is one of the target's ids (does the model perform the task at all?)."""
    last = max(r["layer"] for r in rows)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["layer"] != last:
            continue
        d = out.setdefault(r["lang"], {"n": 0, "p_target": 0.0, "top_is_target": 0.0})
        d["n"] += 1
        d["p_target"] += r["p_target"]
        d["top_is_target"] += r["top_is"] == "target"
    for d in out.values():
        d["p_target"] /= d["n"]
        d["top_is_target"] /= d["n"]
    return out


SOLVES = 0.2
"""Below this mean last-layer p(target) the model does not perform the task: its lens curves are read as noise."""


def write_outputs(result: LensRunResult, out: Path) -> None:
    from xling.io import output_folder
    from xling.harness.outputs import rows_to_csv

    cols = ["prompt_id", "lang", "layer", "p_target", "p_english", "entropy", "top_token", "top_prob", "top_script", "top_is"]
    with output_folder(out, command="lens", overwrite=result.config.overwrite) as tmp:  # built aside, swapped in
        tmp.mkdir()
        (tmp / "lens.csv").write_text(rows_to_csv(result.rows, cols), encoding="utf-8")
        with open(tmp / "prompts.jsonl", "w", encoding="utf-8") as f:
            for p in result.prompts:
                f.write(json.dumps({k: p[k] for k in ("prompt_id", "lang", "source", "concept", "word", "text", "input_ids",
                                                       "target_token_ids", "english_token_ids")}, ensure_ascii=False) + "\n")
        run = {"command": "lens", "model": result.model_name, "config": dataclasses.asdict(result.config),
               "filters": result.filters, "num_hidden_states": result.num_hidden_states, "mexa": result.mexa,
               "started": result.started,
               "seconds": round(result.seconds, 2)}
        (tmp / "run.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
        (tmp / "report.html").write_text(render_report(result), encoding="utf-8")


def _band_chart(title: str, curve: dict[str, list], n_hidden: int, width: int = 460, height: int = 240) -> str:
    from xling.harness.html import esc

    left, top, right, bottom = 46, 28, 110, 36
    pw, ph = width - left - right, height - top - bottom
    X = lambda layer: left + pw * layer / max(1, n_hidden - 1)
    Y = lambda p: top + ph * (1 - p)
    parts = [f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
             f'<text x="{left}" y="16" class="title">{esc(title)}</text>']
    for v in (0, 0.5, 1):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>'
                     f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end" font-size="11">{v:g}</text>')
    for key, colour in (("english", "#d62728"), ("target", "#1f77b4")):
        pts = curve[key]
        upper = " ".join(f"{X(layer):.1f},{Y(q75):.1f}" for layer, _q25, _m, q75 in pts)
        lower = " ".join(f"{X(layer):.1f},{Y(q25):.1f}" for layer, q25, _m, _q75 in reversed(pts))
        parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.18" stroke="none"/>')
        med = " ".join(f"{X(layer):.1f},{Y(m):.1f}" for layer, _q25, m, _q75 in pts)
        parts.append(f'<polyline points="{med}" fill="none" stroke="{colour}" stroke-width="2"/>')
    for i, (key, colour) in enumerate((("target", "#1f77b4"), ("english", "#d62728"))):
        y = top + 14 + 18 * i
        parts.append(f'<line x1="{left + pw + 10}" x2="{left + pw + 26}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>'
                     f'<text x="{left + pw + 30}" y="{y + 4}" font-size="11">{esc(key)}</text>')
    for layer in range(0, n_hidden, max(1, n_hidden // 6)):
        parts.append(f'<text x="{X(layer):.1f}" y="{top + ph + 14}" text-anchor="middle" font-size="11">{layer}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{height - 4}" text-anchor="middle" font-size="11">hidden state (0 = embeddings)</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(result: LensRunResult) -> str:
    from xling.harness.html import display_lang, esc, headline_html, page, table_html

    cur = curves(result.rows)
    n_hidden = result.num_hidden_states
    detour = {lang: english_detour(rows=result.rows, lang=lang) for lang in cur}
    perf = task_performance(result.rows)
    weak = [lang for lang, d in perf.items() if d["p_target"] < SOLVES]
    with_detour = [lang for lang, d in detour.items() if d and lang not in weak]
    langs_word = "language" if len(cur) == 1 else "languages"
    head = [f"{esc(result.model_name)}: {len(result.prompts)} {esc(result.config.task)} prompts in {len(cur)} {langs_word}, "
            f"logit lens at each of {n_hidden} hidden states.",
            (f"English above the target beyond noise, with mean p(English) at least {DETOUR_FLOOR}, before the last layer in {len(with_detour)} of {len(cur)} "
             f"{langs_word}: " + ", ".join(f"{esc(display_lang(lang))} (layers {esc(_ranges(detour[lang]))})" for lang in with_detour))
            if with_detour else (f"No English detour beyond noise (95% paired bootstrap over prompts, mean p(English) at least {DETOUR_FLOOR}) "
             "in the languages the model translates."),
            (f"The model does not perform the task in {len(weak)} of {len(cur)} {langs_word} (mean p(target) at the last "
             f"layer below {SOLVES}): " + ", ".join(f"{esc(display_lang(lang))} {perf[lang]['p_target']:.3f}" for lang in weak) +
             "; their curves say nothing about a latent language.") if weak else ""]
    mexa = result.mexa or {}
    if mexa.get("layers"):
        head.append(f"Mean MEXA over {mexa['langs']} languages (align run {esc(mexa['run_id'])} on {esc(mexa['corpus'])}) "
                    f"peaks at hidden state {mexa['peak']} ({mexa['layers'][mexa['peak']]:.3f}).")
    charts = "".join(_band_chart(f"{display_lang(lang)}: p(target) and p(English), median and IQR", c, n_hidden)
                     for lang, c in cur.items())
    filt_rows = [[display_lang(lang), c.get("concepts", 0), c.get("not_single_words", 0), c.get("same_as_english", 0),
                  c.get("overlapping_answer_tokens", 0), c.get("prompts", 0)] for lang, c in result.filters.items()]
    body = (f"<h1>Logit lens: {esc(result.model_name)}</h1>" + headline_html(head) + charts + _mexa_html(result, cur) +
            "<h2>Prompts kept</h2>" +
            table_html(["language", "word pairs", "not single words", "same as English", "answer tokens overlap English",
                        "prompts"], filt_rows) +
            "<p>Each probability sums the answer's token ids (the first continuation token and every token that "
            "begins the word). The last hidden state's lens is the model's own next-token distribution. "
            "Method: Wendler et al. 2024; files: lens.csv, prompts.jsonl.</p>")
    return page(f"xling lens: {result.model_name}", body)


def _mexa_html(result: LensRunResult, cur: dict) -> str:
    """MEXA per hidden state next to the mean over languages of the median lens probabilities; or one sentence."""
    from xling.harness.html import esc, table_html

    mexa = result.mexa or {}
    if not mexa.get("layers"):
        return f"<p>{esc(mexa.get('note', ''))}</p>" if mexa.get("note") else ""
    rows = []
    for layer in range(result.num_hidden_states):
        med = {k: [x[2] for c in cur.values() for x in c[k] if x[0] == layer] for k in ("target", "english")}
        rows.append([layer, "-" if layer not in mexa["layers"] else f"{mexa['layers'][layer]:.3f}",
                     *("-" if not med[k] else f"{sum(med[k]) / len(med[k]):.3f}" for k in ("target", "english"))])
    return (f"<h2>MEXA per layer (align run {esc(mexa['run_id'])} on {esc(mexa['corpus'])})</h2>" +
            table_html(["hidden state", f"mean MEXA ({mexa['langs']} languages)", "median p(target), mean over languages",
                        "median p(English), mean over languages"], rows))


def _ranges(layers: list[int]) -> str:
    out, start, prev = [], None, None
    for x in layers:
        if start is None:
            start = prev = x
        elif x == prev + 1:
            prev = x
        else:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = prev = x
    if start is not None:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ", ".join(out)


def format_summary(result: LensRunResult) -> str:
    from xling.data.langcodes import short_lang_name

    cur = curves(result.rows)
    lines = [f"lens: {result.model_name}, {len(result.prompts)} prompts, {result.num_hidden_states} hidden states, "
             f"{result.seconds:.1f} s"]
    perf = task_performance(result.rows)
    for lang, c in cur.items():
        massless: list[int] = []
        d = english_detour(rows=result.rows, lang=lang, massless=massless)
        weak = (f" (above but both under {DETOUR_FLOOR} at layers {_ranges(massless)}: no English mass, not a detour)"
                if massless else "")
        t_last = c["target"][-1][2]
        e_peak = max(c["english"][:-1], key=lambda x: x[2]) if len(c["english"]) > 1 else c["english"][-1]
        solves = "" if perf[lang]["p_target"] >= SOLVES else " (does not perform the task: read as noise)"
        lines.append(f"  {short_lang_name(lang):20s} last layer: mean p(target) {perf[lang]['p_target']:.3f}, top-1 "
                     f"{perf[lang]['top_is_target']:.0%}{solves}; median p(English) peaks at layer {e_peak[0]} ({e_peak[2]:.3f}); "
                     f"English above target beyond noise with mean p(English) >= {DETOUR_FLOOR} at layers: {_ranges(d) or 'none'}"
                     f"{weak}; median p(target) last {t_last:.3f}")
    mexa = result.mexa or {}
    if mexa.get("layers"):
        lines.append(f"  mean MEXA (align run {mexa['run_id']}, {mexa['langs']} languages) peaks at hidden state "
                     f"{mexa['peak']} ({mexa['layers'][mexa['peak']]:.3f})")
    return "\n".join(lines)


__all__ = ["LensConfig", "LensRunResult", "build_prompts", "curves", "english_detour", "format_summary", "lens",
           "read_pairs_tsv", "script_of"]
