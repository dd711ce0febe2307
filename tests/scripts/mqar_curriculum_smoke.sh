#!/usr/bin/env bash
# The MQAR curriculum end to end at a tiny budget (3 steps, then 2, one model, two seeds): stage 1 on the
# standard task, its zero-shot accuracy at two gaps, stage 2 from its weights (train --init) on the long
# range task, the table; and a second call reuses every stage.  Usage: mqar_curriculum_smoke.sh BMOJO OUT_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="$1" out="$2"
rm -rf "$out"
args=(--out "$out" --binary "$binary" --models A_full --model-lrs A_full=1e-3 --seeds 2 --steps 3 --long-range-steps 2
  --gaps 16,64 --jobs 2)
/usr/bin/python3 "$root/scripts/mqar_curriculum.py" "${args[@]}" >/dev/null
for s in 0 1; do
  [ -f "$out/A_full/seed$s/standard/result.json" ]
  [ -f "$out/A_full/seed$s/long_range/result.json" ]
  /usr/bin/python3 -c 'import json, sys; z = json.load(open(sys.argv[1])); assert sorted(z) == ["16", "64"], z' \
    "$out/A_full/seed$s/zero_shot.json"
done
grep -q "starting from the weights of $out/A_full/seed1/standard/checkpoint.safetensors" \
  "$out/A_full/seed1/long_range/train.log"
grep -q "| A_full | 0.001 | 1 | " "$out/results.md"
grep -q "zero-shot gap 64" "$out/results.md"
/usr/bin/python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["train"]["lr"] == 1e-3' \
  "$out/A_full/seed0/long_range/config.json"
# --long-range-steps: the second stage's own budget, the first keeps --steps.
/usr/bin/python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["train"]["steps"] == 2' \
  "$out/A_full/seed0/long_range/config.json"
/usr/bin/python3 -c 'import json, sys; assert json.load(open(sys.argv[1]))["train"]["steps"] == 3' \
  "$out/A_full/seed0/standard/config.json"
# Everything is reused: the second call trains nothing (no log is rewritten).
before=$(stat -c %Y "$out/A_full/seed0/long_range/train.log")
sleep 1
/usr/bin/python3 "$root/scripts/mqar_curriculum.py" "${args[@]}" >/dev/null
[ "$(stat -c %Y "$out/A_full/seed0/long_range/train.log")" = "$before" ]
# --standard-task / --long-range-task: another (L, K) of the suite's grid, both stages on its tasks.
big="$out/L128_K8"
/usr/bin/python3 "$root/scripts/mqar_curriculum.py" --out "$big" --binary "$binary" --models A_full --seeds 1 \
  --steps 2 --gaps 128 --jobs 1 --standard-task standard_L128_K8 --long-range-task long_range_L128_K8 >/dev/null
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["data"]; assert (d["seq_len"], d["num_kv_pairs"], d.get("gap", 0)) == (128, 8, 0), d' \
  "$big/A_full/seed0/standard/config.json"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))["data"]; assert (d["seq_len"], d["num_kv_pairs"], d["gap"]) == (128, 8, 128), d' \
  "$big/A_full/seed0/long_range/config.json"
grep -q "(long_range_L128_K8, gap 128)" "$big/results.md"
grep -q -- "--standard-task standard_L128_K8 --long-range-task long_range_L128_K8" "$big/results.md"
if /usr/bin/python3 "$root/scripts/mqar_curriculum.py" --out "$big" --binary "$binary" --long-range-task nosuch \
  >/dev/null 2>"$out/err.txt"; then
  echo "an unknown task was accepted" >&2
  exit 1
fi
grep -q "unknown task 'nosuch'" "$out/err.txt"
echo "mqar curriculum smoke test: stages, zero-shot, --init and reuse written to $out"
