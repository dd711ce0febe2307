#!/usr/bin/env bash
# The MQAR suite end to end at a tiny budget (3 steps, one model, one task, a two-point capacity ablation,
# the budget rule up to 4x the steps, a second seed of the cell and of each m): its runs, tables and both
# charts (the LM suite has its own, lm_suite_smoke.sh).  Usage: mqar_suite_smoke.sh BMOJO_BINARY OUT_DIR
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
binary="$1" out="$2"
rm -rf "$out"
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out" --binary "$binary" --steps 3 --models B \
  --tasks standard --lrs 1e-3 --capacities 8,16 --capacity-lrs 1e-3 --seeds 2 --jobs 1 >/dev/null
grep -q "Seeds:" "$out/results.md"
grep -q "x4 tried" "$out/results.md"
[ -f "$out/runs/standard/B/lr0.001_x4/result.json" ]
[ -f "$out/runs/standard/B/lr0.001_seed1/result.json" ] || [ -f "$out/runs/standard/B/lr0.001_x2_seed1/result.json" ] ||
  [ -f "$out/runs/standard/B/lr0.001_x4_seed1/result.json" ]
# Each result names the machine it ran on, to the CPU family (a grid may be continued on another machine).
/usr/bin/python3 -c 'import json, sys; m = json.load(open(sys.argv[1]))["machine"]; assert " (family " in m and " cpus" in m, m' \
  "$out/runs/standard/B/lr0.001_x4/result.json"
# The capacity ablation seeds each m's best run too, and its table reports the spread.
[ -f "$out/runs/capacity_long_range/m8/lr0.001_seed1/result.json" ]
grep -q "| 8 | .* | 0.001 | .* ± .* (2) |" "$out/results.md"
grep -q "<svg" "$out/recall.svg"
grep -q "<svg" "$out/capacity.svg"
grep -q "<svg" "$out/seeds.svg"
# --report trains nothing (no binary needed): it writes the tables and charts of what has finished, a task
# not run yet marked as such.
finished_runs=$(find "$out/runs" -name result.json | wc -l)
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out" --binary "$out/no-such-binary" --steps 3 --models B \
  --tasks standard,long_range --lrs 1e-3 --capacities 8,16 --capacity-lrs 1e-3 --seeds 2 --jobs 1 --report >/dev/null
[ "$(find "$out/runs" -name result.json | wc -l)" = "$finished_runs" ]
grep -q "1 of 2 cells complete" "$out/results.md"
grep -q "^- long_range B: not started$" "$out/results.md"
grep -q "^| long_range | B | – |$" "$out/results.md"
grep -q "^| standard | B | " "$out/results.md"
grep -q "^| 8 | .* | 0.001 | .* ± .* (2) |" "$out/results.md"
grep -q "<svg" "$out/seeds.svg"
# A finished run is never replaced by a run of another config under the same directory: the suite stops,
# naming the run and what differs, and the result stays.
run="$out/runs/standard/B/lr0.001"
/usr/bin/python3 - "$run/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["train"]["lr"] = 0.0011; json.dump(c, open(sys.argv[1], "w"))
PY
before=$(md5sum < "$run/result.json")
if /usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out" --binary "$binary" --steps 3 --models B \
  --tasks standard --lrs 1e-3 --capacities 8,16 --capacity-lrs 1e-3 --seeds 2 --jobs 1 >/dev/null 2>"$out/refused.txt"; then
  echo "the suite replaced a finished run of another config" >&2; exit 1
fi
grep -q "holds a finished run of another config (train.lr: 0.0011 -> 0.001)" "$out/refused.txt"
[ "$(md5sum < "$run/result.json")" = "$before" ]
# At the B model's own m (32) the ablation is B's cell: a capacity rate that rounds to one of the cell's
# rates (1.04e-3 and 1e-3 both name lr0.001) takes that run instead of refusing it as another config.
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out/own_m" --binary "$binary" --steps 3 --models B \
  --tasks long_range --lrs 1e-3 --capacities 32 --capacity-lrs 1.04e-3 --jobs 1 >/dev/null
grep -q "| 32 | .* | 0.001 |" "$out/own_m/results.md"
[ ! -d "$out/own_m/runs/capacity_long_range" ]
# A run cut off after a checkpoint (here: stopped by --stop-after at step 2 of 4) continues from it, and ends
# exactly as the same run trained in one go; a run cut off before any checkpoint starts again.
one=(--binary "$binary" --steps 4 --models A_full --tasks standard --lrs 1e-3 --capacities '' --solved 0 --jobs 1)
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out/whole" "${one[@]}" >/dev/null
cut="$out/cut/runs/standard/A_full/lr0.001"
mkdir -p "$cut"
cp "$out/whole/runs/standard/A_full/lr0.001/config.json" "$cut/"
"$binary" train --config "$cut/config.json" --out "$cut" --stop-after 2 --json >/dev/null 2>&1
[ -f "$cut/checkpoint.safetensors" ] && [ ! -f "$cut/result.json" ]
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out/cut" "${one[@]}" >"$out/cut.txt"
grep -q "continuing from its checkpoint at step 2" "$out/cut.txt"
/usr/bin/python3 - "$out/whole/runs/standard/A_full/lr0.001/result.json" "$cut/result.json" <<'PY'
import json, sys
whole, cut = (json.load(open(p)) for p in sys.argv[1:])
assert cut["resumed_at_step"] == 2 and cut["steps"] == whole["steps"] == 4, (whole, cut)
assert (cut["loss"], cut["accuracy"], cut["train_loss"]) == (whole["loss"], whole["accuracy"], whole["train_loss"]), \
    (whole, cut)
PY
# The report's wall time of a resumed run adds the logged time of its steps before the resume: here a log of
# 100 steps at 200 ms and 100 at 300 ms before step 200 (a line past it, a list and a bad line are skipped).
/usr/bin/python3 - "$root/scripts/mqar_suite.py" "$out/wall" <<'PY'
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("mqar_suite", sys.argv[1])
suite = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite)
os.makedirs(sys.argv[2])
with open(os.path.join(sys.argv[2], "log.jsonl"), "w") as f:
    f.write('{"step": 100, "ms_per_step": 200}\n[1]\nnot json\n{"step": 200, "ms_per_step": 300}\n'
            '{"step": 300, "ms_per_step": 900}\n{"step": 250, "eval_loss": 1}\n')
assert abs(suite.logged_seconds(os.path.join(sys.argv[2], "log.jsonl"), 200) - 50.0) < 1e-9
assert abs(suite.run_wall_s(sys.argv[2], {"wall_s": 7.0, "resumed_at_step": 200}) - 57.0) < 1e-9
assert suite.run_wall_s(sys.argv[2], {"wall_s": 7.0}) == 7.0
assert suite.logged_seconds(os.path.join(sys.argv[2], "missing.jsonl"), 200) == 0.0
PY
rm "$cut/result.json" "$cut/checkpoint.safetensors"
echo '{"step": 3}' >"$cut/log.jsonl"
/usr/bin/python3 "$root/scripts/mqar_suite.py" --out "$out/cut" "${one[@]}" >"$out/cut.txt"
! grep -q "continuing" "$out/cut.txt"
! grep -q '"step": 3}' "$cut/log.jsonl"
/usr/bin/python3 -c 'import json, sys; assert "resumed_at_step" not in json.load(open(sys.argv[1]))' "$cut/result.json"
/usr/bin/python3 "$root/scripts/lm_suite.py" --help >/dev/null
echo "mqar suite smoke test: runs, budget rule, seeds, tables and charts written to $out"
