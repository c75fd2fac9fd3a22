"""Compare two vocabulary-trimmed copies of a model, token by token and weight by weight.

Rows are matched by their token string (two trimmed copies number their rows
differently). For each model: the rows kept; between them: the overlap
(Jaccard, tokens only in one or the other) and whether the shared tokens'
embedding rows are identical; with the untrimmed ``base``, whether each copy's
rows are the base's rows verbatim, and where the differing tokens sit in the
base vocabulary (a SentencePiece vocabulary is ordered by piece score, which
follows the frequency in its training corpus, so the base id is a rough
frequency rank). All other weights are compared tensor by tensor.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Sequence

import numpy as np
import torch

from xling.methods.vocab.tokenizer import inspect_tokenizer, load_json, model_vocab


def id_to_token(tj: dict) -> dict[int, str]:
    """Every id's token string: the model vocabulary plus added tokens."""
    out = {i: t for t, i in model_vocab(tj).items()}
    for a in tj.get("added_tokens") or []:
        out[int(a["id"])] = a["content"]
    return out


def token_script(token: str, prefix: str | None = None) -> str:
    """A coarse class: the Unicode script-ish name of the first letter, or DIGIT/PUNCT/META."""
    body = _body(token, prefix)
    for ch in body:
        cat = unicodedata.category(ch)
        if cat.startswith("L"):
            return unicodedata.name(ch, "UNKNOWN").split()[0]
        if cat.startswith("N"):
            return "DIGIT"
    return "META" if body == prefix else "PUNCT/SYMBOL"


def _body(token: str, prefix: str | None) -> str:
    return token[len(prefix):] if prefix and token.startswith(prefix) and len(token) > len(prefix) else token


def _summary(tokens: Sequence[str], base_ids: dict[str, int] | None, prefix: str | None, n_examples: int = 15) -> dict:
    scripts = Counter(token_script(t, prefix) for t in tokens)
    out = {
        "count": len(tokens),
        "single_character": sum(1 for t in tokens if len(_body(t, prefix)) == 1),
        "word_initial": sum(1 for t in tokens if prefix and t.startswith(prefix)),
        "scripts": dict(scripts.most_common(8)),
    }
    if base_ids is not None:
        ranks = np.array(sorted(base_ids[t] for t in tokens if t in base_ids))
        if len(ranks):
            out["base_id_quartiles"] = [int(np.percentile(ranks, q)) for q in (25, 50, 75)]
        order = sorted(tokens, key=lambda t: base_ids.get(t, 1 << 40))
        out["examples"] = order[:n_examples]
    else:
        out["examples"] = sorted(tokens)[:n_examples]
    return out


def compare_models(a, tok_a, b, tok_b, base=None, tok_base=None) -> dict:
    """Compare model ``a`` (with its tokenizer) with ``b``, optionally against their ``base``."""
    ta, tb = load_json(tok_a), load_json(tok_b)
    ia, ib = id_to_token(ta), id_to_token(tb)
    prefix = inspect_tokenizer(ta).word_prefix
    ea = a.get_input_embeddings().weight.detach()
    eb = b.get_input_embeddings().weight.detach()
    sa = {t: i for i, t in ia.items() if i < ea.shape[0]}
    sb = {t: i for i, t in ib.items() if i < eb.shape[0]}
    shared = sorted(set(sa) & set(sb), key=lambda t: sa[t])
    only_a = [t for t in sa if t not in sb]
    only_b = [t for t in sb if t not in sa]
    union = len(set(sa) | set(sb))
    base_ids = None
    out: dict = {
        "rows": {"a": int(ea.shape[0]), "b": int(eb.shape[0])},
        "tokens": {"a": len(sa), "b": len(sb), "shared": len(shared), "only_a": len(only_a), "only_b": len(only_b),
                   "jaccard": round(len(shared) / union, 6) if union else 1.0},
    }
    if shared:
        xa = ea.index_select(0, torch.tensor([sa[t] for t in shared]))
        xb = eb.index_select(0, torch.tensor([sb[t] for t in shared]))
        diff = (xa.float() - xb.float()).abs().amax(dim=1)
        out["shared_rows"] = {"max_abs_diff": float(diff.max()), "identical": int((diff == 0).sum())}
    if base is not None:
        tbase = load_json(tok_base)
        ibase = id_to_token(tbase)
        ebase = base.get_input_embeddings().weight.detach()
        base_ids = {t: i for i, t in ibase.items() if i < ebase.shape[0]}
        out["rows"]["base"] = int(ebase.shape[0])
        for name, emb, ids in (("a", ea, sa), ("b", eb, sb)):
            common = [t for t in ids if t in base_ids]
            if common:
                x = emb.index_select(0, torch.tensor([ids[t] for t in common])).float()
                y = ebase.index_select(0, torch.tensor([base_ids[t] for t in common])).float()
                d = (x - y).abs().amax(dim=1)
                out[f"{name}_vs_base"] = {"tokens_in_base": len(common), "not_in_base": len(ids) - len(common),
                                          "max_abs_diff": float(d.max()), "identical_rows": int((d == 0).sum()),
                                          "order_preserving": bool(all(base_ids[s] < base_ids[t] for s, t in zip(
                                              sorted(common, key=ids.get), sorted(common, key=ids.get)[1:])))}
    out["only_a"] = _summary(only_a, base_ids, prefix)
    out["only_b"] = _summary(only_b, base_ids, prefix)
    out["shared"] = _summary(shared, base_ids, prefix, n_examples=0)
    # every other weight, by name
    from xling.methods.vocab.model import vocab_tensors

    skip = {id(vt.tensor) for m in (a, b) for vt in vocab_tensors(m)}
    # weights absent from a checkpoint were initialised at random on loading: not comparable
    missing = set(getattr(a, "_xling_missing_keys", ())) | set(getattr(b, "_xling_missing_keys", ()))
    sa_state, sb_state = a.state_dict(keep_vars=True), b.state_dict(keep_vars=True)
    worst, compared, mismatched = 0.0, 0, []
    for k, v in sa_state.items():
        w = sb_state.get(k)
        if w is None or id(v) in skip or id(w) in skip or k in missing:
            continue
        if v.shape != w.shape:
            mismatched.append(k)
            continue
        compared += 1
        if v.numel():
            worst = max(worst, float((v.detach().float() - w.detach().float()).abs().max()))
    out["other_weights"] = {"tensors_compared": compared, "max_abs_diff": worst, "shape_mismatch": mismatched[:10]}
    return out


def format_comparison(res: dict, name_a: str = "a", name_b: str = "b") -> str:
    t = res["tokens"]
    lines = [
        f"rows: {name_a} {res['rows']['a']:,}, {name_b} {res['rows']['b']:,}"
        + (f", base {res['rows']['base']:,}" if "base" in res["rows"] else ""),
        f"tokens shared {t['shared']:,}; only in {name_a} {t['only_a']:,}; only in {name_b} {t['only_b']:,}; "
        f"Jaccard {t['jaccard']:.4f}",
    ]
    if "shared_rows" in res:
        s = res["shared_rows"]
        lines.append(f"shared rows identical: {s['identical']:,}/{t['shared']:,} (max |diff| {s['max_abs_diff']:.3g})")
    for key, name in (("a", name_a), ("b", name_b)):
        vb = res.get(f"{key}_vs_base")
        if vb:
            lines.append(f"{name} vs base: {vb['identical_rows']:,}/{vb['tokens_in_base']:,} rows identical "
                         f"(max |diff| {vb['max_abs_diff']:.3g}), order-preserving {vb['order_preserving']}, "
                         f"{vb['not_in_base']} tokens not in base")
    for key, name in (("only_a", name_a), ("only_b", name_b)):
        s = res[key]
        q = f", base-id quartiles {s['base_id_quartiles']}" if "base_id_quartiles" in s else ""
        lines.append(f"only in {name}: {s['count']:,} ({s['single_character']:,} single characters, "
                     f"{s['word_initial']:,} word-initial{q}); scripts {s['scripts']}")
        if s.get("examples"):
            lines.append(f"  e.g. {' '.join(s['examples'])}")
    o = res["other_weights"]
    lines.append(f"other weights: {o['tensors_compared']} tensors compared, max |diff| {o['max_abs_diff']:.3g}"
                 + (f"; shape mismatch {o['shape_mismatch']}" if o["shape_mismatch"] else ""))
    return "\n".join(lines)
