"""How much do reviewers' first decisions tell about the rest of an audit's queue?

    python -m bench audit_learning --audit ID [--sizes 20,40,80,160] [--repeats 5]

Needs an audit whose queue people decided in full (the ground truth). For each
size N it draws N decided items at random (as a reviewer reading the queue in its
random order would have decided them), fits `rank_by_decisions` on them, and
scores the other items, `--repeats` times with different draws. Reported per N:
- AUROC of the learned P(wrong) against the real decisions of the other items,
  overall and within the generated label that holds most errors (the label alone
  already ranks well: `label_only_auroc`);
- the error rate among the top-k of the learned order (k = 10% of the other
  items), next to the base rate: how much faster the next errors are found;
- the model's own out-of-fold AUROC on the N (what the audit page shows).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from typing import Any


def main(argv: list[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench audit_learning")
    parser.add_argument("--audit", type=int, required=True)
    parser.add_argument("--sizes", default="20,40,80,160")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "guardweb.settings")
    import django

    django.setup()
    from classifiers.audit.run import embeddings_from_bytes
    from classifiers.ml.eval.evaluate import auroc
    from classifiers.ml.eval.label_audit import rank_by_decisions
    from classifiers.models import LabelAudit

    audit = LabelAudit.objects.get(pk=args.audit)
    rows = list(
        audit.items.exclude(decision="")
        .exclude(embedding=None)
        .values_list("label", "decision", "embedding")
    )
    labels = [r[0] for r in rows]
    wrong = [r[1] != "keep" for r in rows]
    embeddings = embeddings_from_bytes([r[2] for r in rows])
    wrong_labels = [y for y, w in zip(labels, wrong, strict=True) if w]
    if not wrong_labels or len(wrong_labels) == len(rows):
        raise SystemExit(
            "the audit needs decided items with right and with wrong labels"
        )
    majority_label = max(set(wrong_labels), key=wrong_labels.count)
    result: dict[str, Any] = {
        "label_only_auroc": round(
            auroc(
                [float(y == majority_label) for y in labels], [int(w) for w in wrong]
            ),
            3,
        ),
        "errors_with_label": {
            str(y): wrong_labels.count(y) for y in sorted(set(labels))
        },
        "audit": audit.pk,
        "decided_items": len(rows),
        "wrong": sum(wrong),
        "base_error_rate": round(sum(wrong) / max(len(rows), 1), 3),
        "by_size": [],
    }
    for size in (int(s) for s in args.sizes.split(",")):
        if size >= len(rows):
            continue
        aurocs, within_aurocs, top_rates, base_rates, own = [], [], [], [], []
        for repeat in range(args.repeats):
            chosen = set(random.Random(repeat).sample(range(len(rows)), size))
            seen = sorted(chosen)
            rest = [i for i in range(len(rows)) if i not in chosen]
            try:
                ranking = rank_by_decisions(
                    embeddings[seen], [labels[i] for i in seen], [wrong[i] for i in seen],
                    embeddings[rest], [labels[i] for i in rest], seed=repeat,
                )  # fmt: skip
            except ValueError:
                continue  # too few errors in this draw
            truth = [int(wrong[i]) for i in rest]
            aurocs.append(auroc(ranking.wrong_scores, truth))
            # Most errors share one generated label, so the label alone ranks well;
            # within that label is where the embedding has to do the work.
            within = [j for j, i in enumerate(rest) if labels[i] == majority_label]
            within_truth = [truth[j] for j in within]
            if 0 < sum(within_truth) < len(within_truth):  # AUROC needs both kinds
                scores = [ranking.wrong_scores[j] for j in within]
                within_aurocs.append(auroc(scores, within_truth))
            k = max(1, len(rest) // 10)
            top = sorted(range(len(rest)), key=lambda j: -ranking.wrong_scores[j])[:k]
            top_rates.append(sum(truth[j] for j in top) / k)
            base_rates.append(sum(truth) / len(truth))
            if ranking.auroc is not None:
                own.append(ranking.auroc)
        if not aurocs:
            continue
        result["by_size"].append({
            "decided": size,
            "draws": len(aurocs),
            "auroc_on_rest": round(statistics.mean(aurocs), 3),
            "auroc_on_rest_min": round(min(aurocs), 3),
            f"auroc_within_label_{majority_label}": (
                round(statistics.mean(within_aurocs), 3) if within_aurocs else None
            ),
            "error_rate_top_10pct": round(statistics.mean(top_rates), 3),
            "error_rate_base": round(statistics.mean(base_rates), 3),
            "out_of_fold_auroc_shown": round(statistics.mean(own), 3) if own else None,
        })  # fmt: skip
    return result
