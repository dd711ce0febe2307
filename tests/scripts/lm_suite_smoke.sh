#!/usr/bin/env bash
# The LM suite end to end at a tiny budget on a generated corpus (no download): tokenizer and token files,
# two study variants trained for 2 steps at T = 32, validation and test evaluation, the length sweep,
# the training benchmark at two lengths, the report and its charts; then a second invocation reuses the
# finished runs instead of training again, also without their checkpoints and logs (as in a fresh clone),
# and a run missing both its checkpoint and an evaluation is trained again.
# Usage: lm_suite_smoke.sh BMOJO_BINARY OUT_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="$1" out="$(mkdir -p "$2" && cd "$2" && pwd)"
rm -rf "$out"/*
# Documents of made-up sentences, deterministic; a few KB each so that 8T + 1 tokens fit in a document.
/usr/bin/python3 - "$out/corpora" <<'PY'
import os, random, sys
words = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no will more said what up its "
         "about into than them can only other new some could time these two may then do first any my now such "
         "like our over man me even most made after also did many before must through back years where much your "
         "way well down should because each just those people how too little state good very make world still").split()
rng = random.Random(7)
for split, n in (("train", 12), ("valid", 2), ("test", 2)):
    os.makedirs(os.path.join(sys.argv[1], split), exist_ok=True)
    for d in range(n):
        text = " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))).capitalize() + "."
                        for _ in range(90))
        with open(os.path.join(sys.argv[1], split, f"doc{d}.txt"), "w") as f:
            f.write(text + "\n")
PY
suite=(/usr/bin/python3 "$root/scripts/lm_suite.py" --binary "$binary" --study --models B_lambda0,BMBM
  --steps 2 --threads 1 --out "$out/results" --corpora "$out/corpora" --data "$out/lm" --vocab 400
  --set data.seq_len=32 --set train.eval_every=1 --set train.eval_batches=1 --lengthgen-docs 1 --bucket 32
  --bench-lens 32,64)
"${suite[@]}" > "$out/first.log"
r="$out/results"
for m in B_lambda0 BMBM; do
  for f in train.json eval_valid.json eval_test.json lengthgen.json checkpoint.safetensors; do
    [ -s "$r/$m/$f" ] || { echo "lm suite smoke: $r/$m/$f missing" >&2; exit 1; }
  done
done
grep -q "| B, lambda_innov 0 |" "$r/results.md"
grep -q "tokens/s at T = 32" "$r/results.md"
grep -q "tokens/s at T = 64" "$r/results.md"
/usr/bin/python3 -c '
import json, sys
r = sys.argv[1]
for m in ("B_lambda0", "BMBM"):
    v, t = json.load(open(f"{r}/{m}/eval_valid.json")), json.load(open(f"{r}/{m}/eval_test.json"))
    assert v["labelled"] > 0 and t["labelled"] > 0 and v["perplexity"] > 1 and t["perplexity"] > 1, (m, v, t)
    assert v["labelled"] != t["labelled"], ("the test evaluation read the validation tokens", m, v, t)
    assert len(json.load(open(f"{r}/{m}/train.json"))["valid_curve"]) == 2, m
    assert " (family " in json.load(open(f"{r}/{m}/train.json"))["machine"], m
    assert json.load(open(f"{r}/{m}/train.json"))["run"]["overrides"] == json.load(
        open("'"$root"'/configs/lm_study.json"))["variants"][m]["set"], m
b = json.load(open(f"{r}/bench.json"))
assert set(b) == {"B_lambda0", "BMBM"} and all(set(b[m]) == {"32", "64"} for m in b), b
' "$r"
for svg in lengthgen lengthgen_relative valid_loss; do grep -q "<svg" "$r/$svg.svg"; done
# The second invocation trains and evaluates nothing again.
"${suite[@]}" --reuse-bench > "$out/second.log"
if grep -q '\$ .*bmojo \(train\|eval\|lengthgen\)' "$out/second.log"; then
  echo "lm suite smoke: a finished run was trained or evaluated again" >&2
  exit 1
fi
# As in a fresh clone (git keeps the summaries, not checkpoints or logs): still nothing is trained again.
rm "$r"/*/checkpoint.safetensors "$r"/*/log.jsonl
"${suite[@]}" --reuse-bench > "$out/third.log"
if grep -q '\$ .*bmojo \(train\|eval\|lengthgen\)' "$out/third.log"; then
  echo "lm suite smoke: a run whose summaries are kept was trained again without its checkpoint" >&2
  exit 1
fi
# Without a cached evaluation, a run lacking its checkpoint is trained again.
rm "$r/BMBM/eval_test.json"
"${suite[@]}" --reuse-bench > "$out/fourth.log"
grep -q '\$ .*bmojo train .*BMBM' "$out/fourth.log"
[ -s "$r/BMBM/eval_test.json" ]
echo "lm suite smoke test: study runs, evaluations, length sweep, benchmark and report written to $r"
