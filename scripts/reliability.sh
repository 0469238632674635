#!/usr/bin/env bash
# make reliability: the fault suites' full forms, saving their raw results and generating
# docs/RELIABILITY.md from them.
#   default: the Redis fault suite on the default scenario's Debian 12 host (docs/reliability.json);
#   ha: the RabbitMQ cluster's fault tests on the ha scenario, and TLS between its nodes switched
#       off and on under load (docs/ha.json).
# Both by default; `make reliability RELIABILITY_PARTS=ha` runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
parts=${*:-default ha}
export ANSIBLE_ROLES_PATH=$PWD/roles ANSIBLE_FORCE_HANDLERS=true

converged_inventory() {  # the inventory of the scenario just converged
  ls -dt "$HOME"/.ansible/tmp/molecule.*."$1"/inventory/ansible_inventory.yml | head -n 1
}

if [[ " $parts " == *" default "* ]]; then
  molecule create -s default
  molecule converge -s default
  inventory=$(converged_inventory default)
  host=$(molecule list -s default --format plain 2>/dev/null | awk '/bookworm/ {print $1; exit}')
  MOLECULE_INVENTORY_FILE=$inventory DHIS_FAULT_BATCH=500 DHIS_FAULT_WORK=0.2 DHIS_FAULT_WAITING=1000 \
    DHIS_FAULT_OUTAGE=30 DHIS_FAULT_LONG=1 DHIS_FAULT_REPORT=$PWD/docs/reliability.json \
    pytest -q -s -p no:cacheprovider --hosts="ansible://${host:-dhis-celery-bookworm}" \
    --ansible-inventory="$inventory" --connection=ansible molecule/shared/tests/test_reliability.py
fi

if [[ " $parts " == *" ha "* ]]; then
  molecule create -s ha
  molecule converge -s ha
  inventory=$(converged_inventory ha)
  # The scenario's inventory reads its CA from Molecule's ephemeral directory (the tests run plays).
  (cd molecule/ha && MOLECULE_INVENTORY_FILE=$inventory MOLECULE_EPHEMERAL_DIRECTORY=$(dirname "$(dirname "$inventory")") DHIS_HA_BATCH=1000 DHIS_HA_REPORT=$PWD/../../docs/ha.json \
    DHIS_HA_DIST_SWITCH=1 pytest -q -s -p no:cacheprovider --ansible-inventory="$inventory" --connection=ansible \
    tests/test_ha.py -k "losing or killed or distribution")
fi
echo "Wrote the raw results (docs/reliability.json, docs/ha.json) and docs/RELIABILITY.md"
