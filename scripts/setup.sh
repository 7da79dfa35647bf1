#!/usr/bin/env bash
# Installs everything pue-agent and its test suite need on a Debian machine (run as root):
# the Debian packages for the real test servers and a virtual environment in .venv.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh

DEBIAN_PACKAGES=(
  mosquitto mosquitto-clients          # MQTT broker for collector/sink tests
  snmpd snmp                           # net-snmp agent (v3 tests, benchmarks) and tools
  influxdb                             # InfluxDB 1.x for sink tests
  victoria-metrics                     # speaks InfluxDB's v2 write API
  poppler-utils                        # pdftotext/pdftoppm for report tests
  "${REPORT_PACKAGES[@]}"              # fonts and WeasyPrint's libraries for the PDF report
  prometheus-snmp-exporter collectd-core  # SNMP benchmark peers
  prometheus                           # promtool check metrics for /metrics tests
  jq curl                              # deploy/green-window/ scheduler scripts (their test)
  systemd                              # systemd-analyze verify/security for the unit tests
  chromium chromium-driver             # real browser for the web console tests (selenium)
  nats-server                          # JetStream cluster for the campus tests (tests/cluster)
  socat                                # virtual serial line (pty pair) for the Modbus RTU tests
)
apt_ensure setup "${DEBIAN_PACKAGES[@]}"

bash scripts/venv.sh ".[dev]"
