"""Task metrics: accuracy, macro-F1, and entity-level F1 for BIO tagging.

* accuracy: fraction of exact label matches;
* macro-F1: the unweighted mean over classes of per-class F1, over the classes
  present in the gold labels or the predictions (scikit-learn's ``f1_score(
  average="macro")`` with its default labels; a class with no true and no
  predicted positives does not exist there either; a zero division counts 0);
* entity F1 (CoNLL / seqeval default mode, as XTREME reports for NER and
  POS-free tagging): entities are maximal spans ``B-X I-X ... I-X``; an ``I-X``
  that does not continue an ``X`` entity starts a new one (IOB1 leniency, like
  ``conlleval``); precision and recall count exact span-and-type matches,
  micro-averaged over all sentences and types.
"""

from __future__ import annotations

from typing import Sequence


def accuracy(gold: Sequence[int], pred: Sequence[int]) -> float:
    if len(gold) != len(pred):
        raise ValueError("gold and predictions differ in length")
    if not gold:
        return float("nan")
    return sum(int(g == p) for g, p in zip(gold, pred)) / len(gold)


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    if len(gold) != len(pred):
        raise ValueError("gold and predictions differ in length")
    classes = sorted(set(gold) | set(pred))
    if not classes:
        return float("nan")
    total = 0.0
    for c in classes:
        tp = sum(1 for g, p in zip(gold, pred) if g == c and p == c)
        fp = sum(1 for g, p in zip(gold, pred) if g != c and p == c)
        fn = sum(1 for g, p in zip(gold, pred) if g == c and p != c)
        denom = 2 * tp + fp + fn
        total += (2 * tp / denom) if denom else 0.0
    return total / len(classes)


def spans(tags: Sequence[str]) -> set[tuple[int, int, str]]:
    """Entity spans ``(start, end_exclusive, type)`` of one BIO-tagged sentence."""
    out = set()
    start, etype = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or prefix not in ("B", "I") or not kind:
            if start is not None:
                out.add((start, i, etype))
            start, etype = None, None
            continue
        continues = prefix == "I" and start is not None and etype == kind
        if not continues:
            if start is not None:
                out.add((start, i, etype))
            start, etype = i, kind
    return out


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision, recall and F1 over exact entity spans (see the module docstring)."""
    if len(gold) != len(pred):
        raise ValueError("gold and predictions differ in number of sentences")
    tp = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError("a sentence's gold and predicted tags differ in length")
        gs, ps = spans(g), spans(p)
        tp += len(gs & ps)
        n_gold += len(gs)
        n_pred += len(ps)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def entity_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    return entity_scores(gold, pred)["f1"]


def task_metrics(task_type: str, labels: Sequence[str], gold, pred) -> dict[str, float]:
    """The metrics xling reports for a task type: accuracy and macro-F1, or entity F1 (+ token accuracy)."""
    if task_type == "token-classification":
        g = [[labels[t] for t in s] for s in gold]
        p = [[labels[t] for t in s] for s in pred]
        scores = entity_scores(g, p)
        flat_g = [t for s in gold for t in s]
        flat_p = [t for s in pred for t in s]
        return {"entity_f1": scores["f1"], "entity_precision": scores["precision"],
                "entity_recall": scores["recall"], "token_accuracy": accuracy(flat_g, flat_p)}
    out = {"accuracy": accuracy(gold, pred)}
    if task_type == "classification":
        out["macro_f1"] = macro_f1(gold, pred)
    return out


def main_metric(task_type: str) -> str:
    return "entity_f1" if task_type == "token-classification" else "accuracy"


__all__ = ["accuracy", "macro_f1", "spans", "entity_scores", "entity_f1", "task_metrics", "main_metric"]
