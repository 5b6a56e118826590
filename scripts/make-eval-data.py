#!/usr/bin/env python3
"""Builds the FAQ matcher's evaluation sets from the shared banking77 and clinc150 data.

Deterministic (fixed seed), standard library only. Writes under data/:

  banking77/kb-all.jsonl        one FAQ entry per intent, every phrasing of its KB part
  banking77/kb-five.jsonl       the same entries with at most five phrasings each
  banking77/queries-dev.jsonl   tuning split: banking77 queries + should-miss queries
  banking77/queries-test.jsonl  held-out split: never tune on it

Each banking77 intent's rows are shuffled and cut into 70% knowledge base, 15% dev and 15%
test. Should-miss queries (`"expected": null`) are clinc150's out-of-scope queries and every
query of a clinc150 domain other than `banking` and `credit_cards` (those two overlap banking77
in meaning, so they are neither answerable nor should-miss and are left out); they are split
half to dev, half to test.

Usage: python3 scripts/make-eval-data.py [--src /work/shared/data] [--out data]
"""

import argparse
import csv
import json
import os
import random
import shutil

SEED = 20240604
KB_SHARE = 0.70
DEV_SHARE = 0.15
OVERLAPPING_DOMAINS = {"banking", "credit_cards"}


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")


def entry_id(intent):
    return intent.replace("_", "-")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/work/shared/data")
    ap.add_argument("--out", default="data")
    args = ap.parse_args()
    rng = random.Random(SEED)

    by_intent = {}
    with open(os.path.join(args.src, "banking77", "train.csv"), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["text"].strip()
            if text:
                by_intent.setdefault(row["category"], []).append(text)

    kb_all, kb_five, dev, test = [], [], [], []
    for intent in sorted(by_intent):
        texts = sorted(set(by_intent[intent]))
        rng.shuffle(texts)
        n_kb = round(len(texts) * KB_SHARE)
        n_dev = round(len(texts) * DEV_SHARE)
        kb_part, dev_part, test_part = texts[:n_kb], texts[n_kb:n_kb + n_dev], texts[n_kb + n_dev:]
        eid = entry_id(intent)
        answer = "Stand-in answer for the banking77 intent '%s'." % intent
        kb_all.append({"id": eid, "questions": kb_part, "answer": answer, "locale": "en"})
        kb_five.append({"id": eid, "questions": kb_part[:5], "answer": answer, "locale": "en"})
        dev += [{"text": t, "expected": eid} for t in dev_part]
        test += [{"text": t, "expected": eid} for t in test_part]

    with open(os.path.join(args.src, "clinc150", "dev.json"), encoding="utf-8") as f:
        clinc = json.load(f)
    with open(os.path.join(args.src, "clinc150", "domains.json"), encoding="utf-8") as f:
        domains = json.load(f)
    excluded = {i for d in OVERLAPPING_DOMAINS for i in domains[d]}
    miss = [t for t, _ in clinc["oos_train"] + clinc["oos_val"]]
    miss += [t for t, intent in clinc["val"] if intent not in excluded]
    miss = sorted(set(t.strip() for t in miss if t.strip()))
    rng.shuffle(miss)
    half = len(miss) // 2
    dev += [{"text": t, "expected": None} for t in miss[:half]]
    test += [{"text": t, "expected": None} for t in miss[half:]]
    rng.shuffle(dev)
    rng.shuffle(test)

    out = os.path.join(args.out, "banking77")
    os.makedirs(out, exist_ok=True)
    write_jsonl(os.path.join(out, "kb-all.jsonl"), kb_all)
    write_jsonl(os.path.join(out, "kb-five.jsonl"), kb_five)
    write_jsonl(os.path.join(out, "queries-dev.jsonl"), dev)
    write_jsonl(os.path.join(out, "queries-test.jsonl"), test)
    for name in ("banking77", "clinc150"):
        shutil.copyfile(os.path.join(args.src, name, "LICENSE"),
                        os.path.join(args.out, "LICENSE-" + name))
    answerable = sum(1 for q in dev if q["expected"])
    print("entries %d, phrasings %d; dev %d (%d should-miss); test %d (%d should-miss)" % (
        len(kb_all), sum(len(e["questions"]) for e in kb_all), len(dev), len(dev) - answerable,
        len(test), sum(1 for q in test if q["expected"] is None)))


if __name__ == "__main__":
    main()
