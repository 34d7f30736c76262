#!/bin/sh
# Install (or update) Postbridge for the current user from this unpacked tarball; no root needed.
#
#   ./install.sh            copy the app to ~/.local/opt/Postbridge, add it to the applications menu
#   ./install.sh --remove   remove the app and its menu entry (mail, settings and passwords stay)
#
# Mail, settings and the ledger live in the XDG folders (~/.config/Postbridge,
# ~/.local/share/Postbridge), never in the app folder, so an update or removal leaves them alone.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
APP_ID=org.postbridge.Postbridge
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
TARGET=${POSTBRIDGE_INSTALL_DIR:-$HOME/.local/opt/Postbridge}
DESKTOP_FILE=$DATA_HOME/applications/$APP_ID.desktop
ICON_FILE=$DATA_HOME/icons/hicolor/256x256/apps/$APP_ID.png

if [ "${1:-}" = "--remove" ]; then
    rm -rf "$TARGET"
    rm -f "$DESKTOP_FILE" "$ICON_FILE"
    echo "Postbridge removed. Your mail and settings are still in ~/.local/share/Postbridge and ~/.config/Postbridge."
    exit 0
fi

if [ "$HERE" != "$TARGET" ]; then
    mkdir -p "$(dirname "$TARGET")"
    rm -rf "$TARGET.new"
    cp -a "$HERE" "$TARGET.new"
    rm -rf "$TARGET"
    mv "$TARGET.new" "$TARGET"
fi
mkdir -p "$(dirname "$DESKTOP_FILE")" "$(dirname "$ICON_FILE")"
cp "$TARGET/$APP_ID.png" "$ICON_FILE"
# Exec must be an absolute path; quote it for the Desktop Entry spec if it has a space.
sed "s|^Exec=.*|Exec=\"$TARGET/Postbridge\"|" "$TARGET/$APP_ID.desktop" > "$DESKTOP_FILE"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$DATA_HOME/applications" || true
echo "Postbridge installed in $TARGET; start it from the applications menu or with $TARGET/Postbridge"
