#!/usr/bin/env bash
# Build Postbridge for macOS: dist/Postbridge.app (menu-bar only, LSUIElement), its self-test,
# and, when asked, signing, notarisation and a disk image.
#
#   packaging/macos/build.sh                       build and self-test, unsigned
#   CODESIGN_IDENTITY="Developer ID Application: Example Ltd (TEAMID)" \
#   NOTARY_PROFILE=postbridge-notary packaging/macos/build.sh
#                                                  also sign, notarise, staple and make a .dmg
#
# NOTARY_PROFILE names credentials saved once with
#   xcrun notarytool store-credentials postbridge-notary --apple-id ... --team-id ... --password ...
# (an app-specific password). Needs uv and Xcode's command line tools.
# UNTESTED: written alongside the Linux build (packaging/linux/build.sh), which CI runs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT="$ROOT/dist"
APP="$OUT/Postbridge.app"
step() { printf '\n=== %s\n' "$*"; }

step "build environment: runtime dependencies + PyInstaller"
UV_PROJECT_ENVIRONMENT="$ROOT/build/macos-env" uv sync --project "$ROOT" --locked \
    --no-install-project --no-default-groups --group packaging --quiet
PYTHON="$ROOT/build/macos-env/bin/python"

step "PyInstaller: packaging/postbridge.spec"
(cd "$ROOT" && "$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$OUT" --workpath "$ROOT/build/macos-work" packaging/postbridge.spec)
echo "built $APP: $(du -sh "$APP" | cut -f1)"
/usr/libexec/PlistBuddy -c "Print :LSUIElement" "$APP/Contents/Info.plist" | grep -q true

step "self-test"
QT_QPA_PLATFORM=offscreen "$APP/Contents/MacOS/Postbridge" --self-test

[ -n "${CODESIGN_IDENTITY:-}" ] || { echo "CODESIGN_IDENTITY not set: the app is unsigned"; exit 0; }

step "codesign (hardened runtime)"
# --deep signs every nested library and framework inside the bundle with the same identity;
# the hardened runtime (--options runtime) and a secure timestamp are what notarisation requires.
codesign --force --deep --options runtime --timestamp --sign "$CODESIGN_IDENTITY" "$APP"
codesign --verify --deep --strict --verbose=2 "$APP"

VERSION=$(/usr/libexec/PlistBuddy -c "Print :CFBundleShortVersionString" "$APP/Contents/Info.plist")
DMG="$OUT/postbridge-$VERSION-macos-$(uname -m).dmg"
step "disk image $DMG"
rm -f "$DMG"
hdiutil create -volname Postbridge -srcfolder "$APP" -ov -format UDZO "$DMG"
codesign --force --timestamp --sign "$CODESIGN_IDENTITY" "$DMG"

[ -n "${NOTARY_PROFILE:-}" ] || { echo "NOTARY_PROFILE not set: signed, not notarised"; exit 0; }

step "notarise and staple"
xcrun notarytool submit "$DMG" --keychain-profile "$NOTARY_PROFILE" --wait
xcrun stapler staple "$APP"
xcrun stapler staple "$DMG"
xcrun stapler validate "$DMG"
spctl --assess --type execute --verbose=2 "$APP"
echo "ready: $DMG"
