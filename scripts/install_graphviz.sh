#!/usr/bin/env bash
# Install Graphviz's `dot` program (for the drawings of the cells) with apt-get when it is
# missing; says so and carries on when that is not possible (no root, no Debian, offline).
if command -v dot >/dev/null 2>&1; then
    exit 0
fi
sudo_cmd=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo_cmd="sudo"
if command -v apt-get >/dev/null 2>&1; then
    $sudo_cmd apt-get install -y -qq graphviz >/dev/null 2>&1 \
        || { $sudo_cmd apt-get update -qq >/dev/null 2>&1 && $sudo_cmd apt-get install -y -qq graphviz >/dev/null 2>&1; }
fi
command -v dot >/dev/null 2>&1 \
    || echo "warning: could not install Graphviz's 'dot' (apt-get install graphviz / brew install graphviz);" \
            "the cells will not be drawn" >&2
exit 0
