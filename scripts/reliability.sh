#!/usr/bin/env bash
# make reliability: the fault suite's full form against the default scenario's Debian 12 host,
# saving docs/reliability.json and generating docs/RELIABILITY.md from it.
set -euo pipefail
cd "$(dirname "$0")/.."
molecule create -s default
molecule converge -s default
inventory=$(ls -dt "$HOME"/.ansible/tmp/molecule.*.default/inventory/ansible_inventory.yml | head -n 1)  # the one just converged
host=$(molecule list -s default --format plain 2>/dev/null | awk '/bookworm/ {print $1; exit}')
export MOLECULE_INVENTORY_FILE=$inventory ANSIBLE_ROLES_PATH=$PWD/roles ANSIBLE_FORCE_HANDLERS=true
export DHIS_FAULT_BATCH=500 DHIS_FAULT_WORK=0.2 DHIS_FAULT_WAITING=1000 DHIS_FAULT_OUTAGE=30 DHIS_FAULT_LONG=1
export DHIS_FAULT_REPORT=$PWD/docs/reliability.json
pytest -q -s -p no:cacheprovider --hosts="ansible://${host:-dhis-celery-bookworm}" \
  --ansible-inventory="$inventory" --connection=ansible molecule/shared/tests/test_reliability.py
echo "Wrote docs/reliability.json and docs/RELIABILITY.md"
