#!/usr/bin/env bash
# molecule test for every role scenario under molecule/, on the lab image (built if missing).
# Each scenario is timed; containers sit on an internal network and are destroyed at the end.
# Then the conformance suite (tests/conformance): the same fixture roles through Ansible and
# pyinfra on two fresh containers of the same image; what happened on the hosts must be equal.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
source scripts/lib.sh
stage lab-image bash lab/lab.sh build
export GRIMBOTS_LAB_IMAGE=${GRIMBOTS_LAB_IMAGE:-grimbots-lab:latest}
stage wheels bash scripts/build-wheels.sh
scenarios=${MOLECULE_SCENARIOS:-$(cd molecule && ls -d */ | tr -d / | tr '\n' ' ')}
rc=0
for s in $scenarios; do
  stage "molecule-$s" molecule test -s "$s" || rc=1
done
stage conformance pytest -p no:cacheprovider -q tests/conformance || rc=1
exit $rc
