#!/usr/bin/env bash
# Installs everything pue-agent and its test suite need on a Debian machine (run as root):
# the Debian packages for the real test servers and a virtual environment in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  mosquitto mosquitto-clients          # MQTT broker for collector/sink tests
  snmpd snmp                           # net-snmp agent (v3 tests, benchmarks) and tools
  influxdb                             # InfluxDB 1.x for sink tests
  victoria-metrics                     # speaks InfluxDB's v2 write API
  poppler-utils                        # pdftotext/pdftoppm for report tests
  fonts-noto-cjk                       # CJK font embedded in the PDF report
  libpango-1.0-0 libpangoft2-1.0-0     # WeasyPrint's text layout
  libharfbuzz-subset0                  # WeasyPrint subsets the CJK font fast (else fontTools, slow)
  prometheus-snmp-exporter collectd-core  # SNMP benchmark peers
  systemd                              # systemd-analyze verify/security for the unit tests
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  # Debian starts services on install; the tests start their own on loopback ports.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

bash scripts/venv.sh ".[dev]"
