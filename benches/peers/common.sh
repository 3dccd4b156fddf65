# Sourced by the benches/peers scripts: paths, `say`, the release build of the
# flowmote tool and the peers' Python venv. Run from anywhere; it cd's to the
# repository root.
#   DATA  the shared data directory (default ../shared/data beside the repo)
#   OUT   where results go (default benches/peers/results)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
DATA=${DATA:-$root/../shared/data}
OUT=${OUT:-$here/results}
mkdir -p "$OUT"
tgt=${CARGO_TARGET_DIR:-$root/target}
tool=$tgt/release/flowmote

say() { printf '==> %s\n' "$*" >&2; }

# Build the `flowmote` binary ($tool).
build_tool() {
    say "building flowmote (release)"
    cargo build -q --release -p flowmote-tools
}

# Set $py to the venv's Python with the pinned peers (requirements.txt:
# FlowJAX, JAX CPU wheels, scikit-learn), creating or updating the venv
# from PyPI when requirements.txt changed.
peer_python() {
    local venv=$here/.venv stamp=$here/.venv/.requirements.sha want
    want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "creating $venv (FlowJAX + JAX CPU + scikit-learn from PyPI)"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
        "$venv/bin/pip" install -q -r "$here/requirements.txt"
        echo "$want" >"$stamp"
    fi
    py=$venv/bin/python
}
