#!/bin/sh
# Hold / release flexible Slurm jobs by pue-agent's green window (deploy/green-window/README.md).
# Needs: curl, jq, scontrol, squeue. Reads only the current hour (hours[0]).
set -eu

URL="${PUE_AGENT_URL:-http://127.0.0.1:8080}"
TOKEN_FILE="${PUE_AGENT_TOKEN_FILE:-/etc/pue-agent/auditor.token}"
PARTITION="${GREEN_PARTITION:-flex}"
MIN_SHARE="${GREEN_MIN_SHARE:-0.8}"
MIN_SURPLUS_KW="${GREEN_MIN_SURPLUS_KW:-0}"
DRY_RUN="${DRY_RUN:-0}"

run() {
    if [ "$DRY_RUN" = "1" ]; then echo "$*"; else "$@"; fi
}

pending_jobs() {
    # $1: "held" or "free"; jobs of the flexible partition that are pending.
    if [ "$1" = "held" ]; then
        squeue -h -p "$PARTITION" -t PENDING -o '%i %r' | awk '$2 ~ /Held/ {print $1}'
    else
        squeue -h -p "$PARTITION" -t PENDING -o '%i %r' | awk '$2 !~ /Held/ {print $1}'
    fi
}

# The token is read from a file and sent as a header, never put on the command line.
if ! window="$(curl -fsS --max-time 10 -H @- "$URL/api/v1/green-window" <<HDR
Authorization: Bearer $(cat "$TOKEN_FILE")
HDR
)"; then
    echo "green window unavailable: releasing held jobs of $PARTITION" >&2
    for job in $(pending_jobs held); do run scontrol release "$job"; done
    exit 0
fi

share="$(printf '%s' "$window" | jq -r '.hours[0].green_share // 0')"
surplus="$(printf '%s' "$window" | jq -r '.hours[0].expected_surplus_kw // 0')"
open="$(jq -nr --argjson s "$share" --argjson p "$surplus" \
    --argjson ms "$MIN_SHARE" --argjson mp "$MIN_SURPLUS_KW" \
    'if ($s >= $ms) or ($mp > 0 and $p >= $mp) then "yes" else "no" end')"

if [ "$open" = "yes" ]; then
    echo "green window open (share $share, surplus ${surplus} kW): releasing $PARTITION"
    for job in $(pending_jobs held); do run scontrol release "$job"; done
else
    echo "green window closed (share $share, surplus ${surplus} kW): holding $PARTITION"
    for job in $(pending_jobs free); do run scontrol hold "$job"; done
fi
