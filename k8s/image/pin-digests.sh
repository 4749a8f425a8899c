#!/usr/bin/env bash
# Pins every base image in the Dockerfile to the digest its tag points to
# now: the multi-arch index's digest, so one pin serves every platform.
# Replaces a placeholder (@sha256:UNPINNED) or an older digest, in place.
#
#   k8s/image/pin-digests.sh [DOCKERFILE]    (needs skopeo: apt-get install skopeo)
set -euo pipefail
cd "$(dirname "$0")/../.."
file=${1:-Dockerfile}
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
grep -E '^FROM[[:space:]]+[^[:space:]]+@sha256:' "$file" | awk '{print $2}' | cut -d@ -f1 | sort -u |
while read -r ref; do
  skopeo inspect --raw "docker://$ref" > "$tmp"
  digest=$(skopeo manifest-digest "$tmp")
  [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || { echo "no digest for $ref: $digest" >&2; exit 1; }
  sed -i -E "s|^(FROM[[:space:]]+)${ref//./\\.}@sha256:[^[:space:]]+|\1${ref}@${digest}|" "$file"
  echo "$ref@$digest"
done
