#!/usr/bin/env bash
# Peer comparison: flowmote vs FlowJAX (JAX, CPU) on the same data split, the
# same architecture (flow type, layer count, hidden width, conditioner depth)
# and the same training budget (epochs, batch, learning rate, 10 % validation
# split with best-epoch selection). Writes benches/peers/results/*.json and a
# markdown table benches/peers/results/results.md (ratios included).
#
#   benches/peers/run.sh                 # everything (~10 min on 2 cores)
#   QUICK=1 benches/peers/run.sh         # 5 epochs, a smoke test
#   EPOCHS=200 HIDDEN=32 benches/peers/run.sh
#
# Knobs (env): LAYERS=4 HIDDEN=64 DEPTH=2 EPOCHS=100 BATCH=64 LR=1e-3 SEED=0
#              DATA=<repo>/../shared/data  OUT=benches/peers/results
#              SETS="daphnet_gait breast_cancer"  FLOWS="maf coupling"
#              DEQUANTIZE=0|1 (flowmote tool: dequantise integer columns as
#              `flowmote train` does by default; 0 = off, like the peer)
#
# Needs python3 (>= 3.10) with venv and pip access to PyPI; the virtual
# environment is created in benches/peers/.venv (git-ignored) on first use.
source "$(dirname "$0")/common.sh"

LAYERS=${LAYERS:-4}
HIDDEN=${HIDDEN:-64}
DEPTH=${DEPTH:-2}
EPOCHS=${EPOCHS:-100}
BATCH=${BATCH:-64}
LR=${LR:-1e-3}
SEED=${SEED:-0}
if [ -n "${QUICK:-}" ]; then EPOCHS=5; fi
SETS=${SETS:-daphnet_gait breast_cancer}
FLOWS=${FLOWS:-maf coupling}
DEQUANTIZE=${DEQUANTIZE:-0}

# --- peer environment and flowmote binaries ---------------------------------
peer_python
build_tool
cargo build -q --release -p flowmote-benches --bins
timing=$tgt/release/flowmote-timing

# The flowmote tool: train a model file, evaluate it on the test split.
# Early stopping off on both sides (all epochs run, best validation epoch kept).
# The architecture is the peers': one flow (one split, no committee: --folds 1),
# no noise, no whitening layer, a random validation split (the tool's defaults
# would search, stack and cross-validate small files).
flowmote_tool() { # set flow json
    local set=$1 flow=$2 json=$3 model=$OUT/$1.$2.model.json
    local t0 t1 deq=() lab=()
    [ "$DEQUANTIZE" = 1 ] || deq=(--no-dequantize)
    case ",$(head -1 "$DATA/$set.test.csv" | tr -d '\r')," in *,label,*) lab=(--label-column label) ;; esac
    t0=$(date +%s.%N)
    "$tool" train --data "$DATA/$set.train.csv" --out "$model" \
        --flow "$flow" --layers "$LAYERS" --hidden "$HIDDEN" --depth "$DEPTH" \
        --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --seed "$SEED" --patience 0 \
        --noise 0 --no-whiten --val-split random --no-mixture --folds 1 --target host \
        "${deq[@]}" --quiet >&2
    t1=$(date +%s.%N)
    "$tool" eval --model "$model" --data "$DATA/$set.test.csv" "${lab[@]}" --json >"$json.eval"
    "$py" - "$json.eval" "$t0" "$t1" "$flow" "$DEQUANTIZE" >"$json" <<'EOF2'
import json, sys
ev = json.load(open(sys.argv[1]))
def pick(*keys):
    for k in keys:
        if ev.get(k) is not None:
            return ev[k]
    return None
print(json.dumps({
    "trainer": "flowmote tool (flowmote train + flowmote eval --json)"
    + (", dequantised integer columns" if sys.argv[5] == "1" else ", no dequantisation"),
    "flow": sys.argv[4],
    "test_nll": pick("nll_normal", "nll"),
    "auroc": pick("auroc"),
    "train_s": float(sys.argv[3]) - float(sys.argv[2]),
    "eval": ev,
}))
EOF2
    echo "$model"
}

for set in $SETS; do
    train=$DATA/$set.train.csv
    test=$DATA/$set.test.csv
    dim=$(head -1 "$train" | tr ',' '\n' | grep -cv '^label$')
    for flow in $FLOWS; do
        base=$OUT/$set.$flow
        common=(--flow "$flow" --layers "$LAYERS" --hidden "$HIDDEN" --depth "$DEPTH"
            --epochs "$EPOCHS" --batch "$BATCH" --lr "$LR" --seed "$SEED")
        say "$set / $flow: flowmote"
        model=$(flowmote_tool "$set" "$flow" "$base.flowmote.json")
        say "$set / $flow: flowmote timing"
        "$timing" --flow "$flow" --dim "$dim" --rows "$test" --model "$model" \
            --layers "$LAYERS" --hidden "$HIDDEN" --depth "$DEPTH" >"$base.timing.json"
        say "$set / $flow: FlowJAX"
        "$py" "$here/peer_flowjax.py" --train "$train" --test "$test" "${common[@]}" >"$base.flowjax.json"
    done
done

{
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "Settings: LAYERS=$LAYERS HIDDEN=$HIDDEN DEPTH=$DEPTH EPOCHS=$EPOCHS BATCH=$BATCH LR=$LR SEED=$SEED DEQUANTIZE=$DEQUANTIZE."
    echo
    "$py" "$here/report.py" "$OUT" $SETS -- $FLOWS
} >"$OUT/results.md"
cat "$OUT/results.md"
