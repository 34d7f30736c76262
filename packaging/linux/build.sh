#!/usr/bin/env bash
# Build Postbridge for Linux: the one-folder app (PyInstaller, packaging/postbridge.spec) and a
# tarball with a .desktop file, the icon and a per-user install script.
#
#   packaging/linux/build.sh [--out DIR] [--no-tarball]
#
# Output (default DIR: dist/linux in the checkout):
#   DIR/dist/Postbridge/                      the one-folder app (run ./Postbridge)
#   DIR/postbridge-VERSION-linux-ARCH.tar.gz  that folder plus .desktop, icon and install.sh
#
# PyInstaller is not a dependency of Postbridge: it comes from the lock file's "packaging"
# dependency group, installed with the runtime dependencies (and nothing else: no test tools,
# no keyrings.alt) into a build environment of its own, DIR/build-env. The package itself is
# taken from the checkout (the spec's pathex), so what is built is what is checked out.
# Needs uv and, for the first build, PyPI (or uv's cache). The build takes about a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/dist/linux"
TARBALL=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --no-tarball) TARBALL=no; shift ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

step() { printf '\n=== %s\n' "$*"; }

command -v uv >/dev/null 2>&1 || { echo "uv is needed to build (https://docs.astral.sh/uv/)" >&2; exit 2; }

step "build environment: runtime dependencies + PyInstaller ($OUT/build-env)"
UV_PROJECT_ENVIRONMENT="$OUT/build-env" uv sync --project "$ROOT" --locked \
    --no-install-project --no-default-groups --group packaging --quiet
PYTHON="$OUT/build-env/bin/python"
"$PYTHON" -c 'import sys, PyInstaller; print(f"Python {sys.version.split()[0]}, PyInstaller {PyInstaller.__version__}")'

step "PyInstaller: packaging/postbridge.spec"
started=$(date +%s)
(cd "$ROOT" && "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$OUT/dist" --workpath "$OUT/work" packaging/postbridge.spec)
APP="$OUT/dist/Postbridge"
[ -x "$APP/Postbridge" ] || { echo "the build produced no $APP/Postbridge" >&2; exit 1; }
echo "built $APP in $(( $(date +%s) - started )) s; size: $(du -sh "$APP" | cut -f1)"

# Files the tarball carries next to the app (not used by the app itself).
cp "$ROOT/packaging/linux/org.postbridge.Postbridge.desktop" "$APP/"
cp "$ROOT/resources/icons/postbridge-256.png" "$APP/org.postbridge.Postbridge.png"
cp "$ROOT/packaging/linux/install.sh" "$APP/install.sh"

if [ "$TARBALL" = yes ]; then
    step "tarball"
    VERSION=$("$PYTHON" -c 'import ast, sys; t = ast.parse(open(sys.argv[1]).read()); print(next(ast.literal_eval(n.value) for n in t.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "__version__"))' "$ROOT/desktop/postbridge/__init__.py")
    TAR="$OUT/postbridge-$VERSION-linux-$(uname -m).tar.gz"
    tar -C "$OUT/dist" -czf "$TAR" --owner=0 --group=0 Postbridge
    echo "$TAR: $(du -h "$TAR" | cut -f1)"
fi
