#!/usr/bin/env bash
# What each ingredient of `flowmote train`'s defaults does to the test NLL
# (issue 6): from the old defaults (random split, no noise, no whitening,
# maf) one ingredient at a time to today's defaults, one seed, same data as
# benches/peers/defaults.sh. Writes benches/peers/results/ablation.md.
#
#   benches/peers/ablation.sh            # ≈ 17 min on 2 cores
#   SEED=1 benches/peers/ablation.sh
source "$(dirname "$0")/common.sh"
SEED=${SEED:-0}
mkdir -p "$OUT/ablation"
build_tool

# name|flags ($1: the noise level the default search chose for maf on the set;
# $2: the data-size default of layers and hidden units)
variants() {
    cat <<V
old defaults: maf, random split, no noise, no whitening|--flow maf $2 --val-split random --noise 0 --no-whiten --folds 1
+ last-rows split|--flow maf $2 --noise 0 --no-whiten --folds 1
+ noise $1 (the level the search picks)|--flow maf $2 --noise $1 --no-whiten --folds 1
+ whitening layer|--flow maf $2 --noise $1 --folds 1
+ family and size search|--no-mixture --folds 1
+ stacking the candidates|--folds 1
+ 5-fold cross-validation when under 100 validation rows = today's defaults|
the whitening-layer model, 5-fold cross-validated|--flow maf $2 --noise $1
today's defaults but --val-split random|--val-split random
V
}

table=$OUT/ablation.md
{
    echo "Seed $SEED; \`flowmote train --data \$D/\$SET.train.csv --out m.json --seed $SEED <flags>\`, then \`eval\`."
    echo
    echo "| set | variant | flags | validation NLL | test NLL | AUROC | kept model | train s |"
    echo "|---|---|---|---|---|---|---|---|"
} >"$table"
for set in daphnet_gait breast_cancer; do
    case $set in
        daphnet_gait) noise=0.2 size="--layers 4 --hidden 32" lab=() ;;
        *) noise=0.1 size="--layers 2 --hidden 16" lab=(--label-column label) ;;
    esac
    i=0
    while IFS='|' read -r name flags; do
        i=$((i + 1))
        m=$OUT/ablation/$set.$i.json
        printf '==> %s: %s\n' "$set" "$name" >&2
        t0=$(date +%s.%N)
        # shellcheck disable=SC2086
        "$tool" train --data "$DATA/$set.train.csv" --out "$m" --seed "$SEED" -q $flags >/dev/null
        t1=$(date +%s.%N)
        "$tool" eval --model "$m" --data "$DATA/$set.test.csv" "${lab[@]}" --json >"$m.eval"
        python3 - "$set" "$name" "$flags" "$m" "$t0" "$t1" >>"$table" <<'P'
import json, sys
s, name, flags, m, t0, t1 = sys.argv[1:]
mod, ev = json.load(open(m)), json.load(open(m + ".eval"))
st = mod["provenance"]["settings"]
nll = ev["nll_normal"] if ev.get("nll_normal") is not None else ev["nll"]
au = "–" if ev.get("auroc") is None else f"{ev['auroc']:.3f}"
if (st.get("folds") or 1) > 1:
    kinds = [c["flow"] for c in st["members"]]
    kept = f"{st['folds']}-fold committee of {len(kinds)} flows (" + ", ".join(
        f"{k} ×{kinds.count(k)}" for k in sorted(set(kinds))) + ")"
elif st.get("members"):
    kept = "mixture of " + " + ".join(f"{c['flow']} {c['layers']}×{c['hidden']} ({c['noise']:.1f})" for c in st["members"])
else:
    kept = f"{mod['kind']} {st['layers']}×{st['hidden']} noise {st['noise']:.1f}"
print(f"| {s} | {name} | `{flags or '(none)'}` | {mod['provenance']['val_nll']:.2f} | {nll:.2f} | {au} | "
      f"{kept} | {float(t1) - float(t0):.0f} |")
P
    done < <(variants "$noise" "$size")
done
cat "$table"
