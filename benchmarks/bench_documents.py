"""How long the document kind's exact references and per-checkpoint analysis take, side by side.

Prints, for the `documents_cpu` language: the forward algorithm of each level on 500 and 2,000
test documents (seconds, and per 1,000 documents), and one analysed checkpoint of an untrained
`documents_cpu` model split into its parts (scores, standard errors, adaptation, boundary
inference, the four edits). One thread.

    python benchmarks/bench_documents.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from grokscope.config import preset
from grokscope.kinds import build_dataset
from grokscope.kinds.documents.data import doc_set
from grokscope.measures import documents as dm
from grokscope.measures.document_interventions import edit_response, make_edits, probe_predictions
from grokscope.measures.levels import tree_logprobs
from grokscope.models import build_model
from grokscope.tasks.document_inference import forward, machines, unigram
from grokscope.tasks.documents import documents_task, make_grammar
from grokscope.tasks.sequence import padded


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    torch.set_num_threads(1)
    import sklearn.metrics  # noqa: F401  (imported once per process: not part of a checkpoint)

    g = make_grammar(2, 4, 6, 6, 2, 8, 4, 4, "unreliable", 0)
    ms = machines(g)
    print("exact references (forward algorithm), seconds")
    print(f"{'documents':>10} {'level 0':>8} {'level 1':>8} {'level 2':>8} {'level 3':>8} "
          f"{'level 4':>8} {'per 1k docs':>12}")  # fmt: skip
    for n in (500, 2000):
        ds = documents_task(g, 0, 0, n, 0, 1)
        tokens, lengths = padded(ds.splits["test"])
        row = [timed(lambda: unigram(g))[1]]
        for k in (1, 2, 3, 4):
            row.append(timed(lambda k=k, t=tokens, n=lengths: forward(g, ms[k], t, n))[1])
        print(f"{n:>10} " + " ".join(f"{t:8.3f}" for t in row) + f" {sum(row) / n * 1000:12.3f}")

    cfg = preset("documents_cpu")
    ds = build_dataset(cfg.task)
    model = build_model(cfg.model, ds.d_vocab, ds.n_ctx, seed=0).eval()
    test, setup = timed(lambda: doc_set(ds, "test"))
    docs, lats = doc_set(ds, "gen").unpadded()
    edits = make_edits(g, docs, lats, 200, max_len=ds.n_ctx)
    post = forward(g, ms[4], test.tokens, test.lengths, conditional=True)
    exact = {
        name: probe_predictions(p, lambda t, n: forward(g, ms[4], t, n).pred)
        for name, p in edits.items()
    }

    def logp(tokens):
        return tree_logprobs(model, tokens, torch.device("cpu"), ds.d_vocab)

    parts = {}
    lp, parts["model forward"] = timed(lambda: logp(test.tokens))
    _, parts["scores"] = timed(lambda: dm.score_levels(lp, test.tokens, test.lengths, test.refs))
    _, parts["coefficient s.e."] = timed(
        lambda: dm.coefficient_se(lp, test.tokens, test.lengths, test.refs)
    )
    _, parts["adaptation"] = timed(
        lambda: dm.adaptation_curve(lp, test.tokens, test.refs, test.lat)
    )
    _, parts["boundary inference"] = timed(
        lambda: dm.boundary_inference(
            lp,
            test.tokens,
            test.lat,
            post.boundary,
            post.pred_new,
            post.pred_cont,
            dm.content_slice(g),
        )  # fmt: skip
    )

    def responses():
        for name, pairs in edits.items():
            p = probe_predictions(pairs, lambda t, n: np.exp(logp(t)))
            edit_response(name, pairs, g, p, exact[name])

    _, parts["four edits"] = timed(responses)
    total = sum(parts.values())
    print(f"\none analysed checkpoint of documents_cpu ({len(test.lengths)} test documents; the "
          f"test set's references once per analysis: {setup:.2f} s), seconds")  # fmt: skip
    for name, t in parts.items():
        print(f"{name:>20} {t:8.3f} ({t / total:5.1%})")
    print(f"{'total':>20} {total:8.3f}")


if __name__ == "__main__":
    main()
