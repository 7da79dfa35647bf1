#!/usr/bin/env bash
# Builds dist/pue-agent_<version>_<arch>.deb: pue-agent in a self-contained virtual
# environment under /opt/pue-agent (Debian's own /usr/bin/python3, so it runs on a plain
# Debian without pyenv), /usr/bin/pue-agent, the systemd units, a commented
# /etc/pue-agent/agent.toml and site.toml as conffiles, and the docs, deploy examples,
# LICENSE and NOTICE in /usr/share/doc/pue-agent. Test data (tests/fixtures) is not shipped.
#
# Usage: bash scripts/build-deb.sh [--out DIR]     (default DIR: dist)
# PUE_AGENT_DEB_VERSION overrides the package version (default: agent.__version__), e.g. to
# build an upgrade of the same code. Needs no network beyond the Python package index pip
# is configured with (dependencies come as wheels; only pue-agent's kernel is compiled).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=dist
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
# shellcheck source=scripts/apt.sh
source scripts/apt.sh
# Debian's python3 with venv and headers, and gcc for agent/energy/_kernel.c.
apt_ensure build-deb python3 python3-venv python3-dev gcc libc6-dev dpkg

PYTHON=/usr/bin/python3
py_version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
version=${PUE_AGENT_DEB_VERSION:-$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/__init__.py)}
[ -n "$version" ] || { echo "build-deb: no __version__ in agent/__init__.py" >&2; exit 1; }
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
deb="$out/pue-agent_${version}_${arch}.deb"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
stage=$work/root
venv=$stage/opt/pue-agent

# 1. The wheel, from a copy of the sources: a build in the checkout would leave build/ and
#    could pick up the editable install's compiled kernel (*.so) for another Python.
mkdir -p "$work/src"
tar -C "$root" --exclude='__pycache__' --exclude='*.so' --exclude='*.egg-info' \
  -cf - pyproject.toml setup.py README.md LICENSE NOTICE agent collectors rules \
  | tar -C "$work/src" -xf -
"$PYTHON" -m venv "$work/build-env"
"$work/build-env/bin/pip" wheel -q --no-deps -w "$work/wheels" "$work/src"

# 2. The virtual environment at its final path inside the staging tree, then made to
#    believe it lives at /opt/pue-agent (what pip wrote: script shebangs, activate, cfg).
"$PYTHON" -m venv "$venv"
"$venv/bin/pip" install -q --no-compile "$work"/wheels/pue_agent-*.whl
"$venv/bin/pip" uninstall -q -y pip  # the package is updated by apt, never by pip
grep -rlI --null "$venv" "$venv/bin" "$venv/pyvenv.cfg" \
  | xargs -0 sed -i "s#$venv#/opt/pue-agent#g"
if grep -rlI "$stage" "$venv" >/dev/null; then
  echo "build-deb: the staging path is left in:" >&2
  grep -rlI "$stage" "$venv" >&2
  exit 1
fi
# Byte-code compiled now, recording the installed paths (tracebacks name real files), so
# the files are dpkg's and a purge removes them.
"$venv/bin/python" -m compileall -q -j 0 -s "$stage" -p / "$venv/lib" >/dev/null

# 3. The rest of the file system.
install -d "$stage/usr/bin" "$stage/lib/systemd/system" "$stage/etc/pue-agent" \
  "$stage/usr/share/doc/pue-agent/collectors"
ln -s /opt/pue-agent/bin/pue-agent "$stage/usr/bin/pue-agent"
install -m 0644 systemd/*.service systemd/*.timer "$stage/lib/systemd/system/"
install -m 0644 packaging/deb/agent.toml packaging/deb/site.toml "$stage/etc/pue-agent/"
doc=$stage/usr/share/doc/pue-agent
install -m 0644 README.md LICENSE NOTICE deploy/INSTALL.md "$doc/"
cat LICENSE NOTICE >"$doc/copyright"  # the file Debian policy looks for
cp -r docs "$doc/docs"
cp -r deploy "$doc/deploy"
for kind in collectors/*/sample.toml; do
  install -D -m 0644 "$kind" "$doc/$kind"
done
find "$stage" -name __pycache__ -path "$stage/usr/*" -prune -exec rm -rf {} +

# 4. Control files. python3 ${py_version}: the virtual environment runs that interpreter.
install -d "$stage/DEBIAN"
install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
printf '/etc/pue-agent/agent.toml\n/etc/pue-agent/site.toml\n' >"$stage/DEBIAN/conffiles"
next_minor="${py_version%.*}.$((${py_version#*.} + 1))"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat >"$stage/DEBIAN/control" <<EOF
Package: pue-agent
Version: $version
Architecture: $arch
Maintainer: pue-agent developers <pue-agent@localhost>
Installed-Size: $size
Depends: python3 (>= $py_version), python3 (<< $next_minor), libc6, fonts-noto-cjk, libpango-1.0-0, libpangoft2-1.0-0, libharfbuzz-subset0
Section: admin
Priority: optional
Description: datacenter energy agent with auditable PUE, green share and CUE
 Collects PDU, UPS, meter, cooling and GPU server telemetry over SNMP, MQTT and
 Redfish into a durable hash-chained journal, computes interval energy, PUE (ISO/IEC
 30134-2), green-power share and CUE, evaluates policy packs and signs monthly
 reports an auditor can re-compute. Runs as a hardened systemd service.
EOF

# Root-owned files whatever user builds (dpkg-deb records the owners it finds); zstd: 8x
# faster to build than gzip -6 and smaller (dpkg reads it since Debian 12).
dpkg-deb --root-owner-group -Zzstd -z3 --build "$stage" "$deb" >/dev/null
echo "build-deb: $deb ($(du -h "$deb" | cut -f1), installs $((size / 1024)) MB) in ${SECONDS} s"
