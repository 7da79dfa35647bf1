# Sourced by scripts/setup.sh and scripts/demo.sh (not run on its own): installs the Debian
# packages they need when missing, as root or with sudo.

# What the PDF report needs at run time (the demo writes one): WeasyPrint's text layout and
# the CJK font it embeds.
REPORT_PACKAGES=(
  fonts-noto-cjk                       # CJK font embedded in the PDF report
  libpango-1.0-0 libpangoft2-1.0-0     # WeasyPrint's text layout
  libharfbuzz-subset0                  # WeasyPrint subsets the CJK font fast (else fontTools, slow)
)

# apt_ensure WHO PKG...: install those of PKG that dpkg does not list as installed
# (apt-get update first; nothing at all when every one is there). WHO prefixes the message.
apt_ensure() {
  local who=$1 pkg sudo="" rc=0 policy=""
  shift
  local missing=()
  if ! command -v dpkg-query >/dev/null; then
    echo "$who: not a Debian system: make sure these are installed: $*" >&2
    return 0
  fi
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "$who: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  $sudo apt-get update -qq
  # Debian starts services on install; the tests and the demo start their own on loopback.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    policy=1
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
  if [ -n "$policy" ]; then $sudo rm -f /usr/sbin/policy-rc.d; fi
  return "$rc"
}
