#!/usr/bin/env bash
# Builds an egress-sentinel image from `scratch` with buildah and smoke-tests
# it with podman: `--version`, `check-config` of the shipped example config,
# and the loopback `demo` as user 65532 on a read-only root filesystem with
# no network but loopback. Used by .ci/run.
#
#   k8s/image/build-scratch.sh [BINARY]   (default: target/release/egress-sentinel)
#
# Images live in a throwaway storage under a temporary folder (vfs driver),
# so nothing is left behind. The flags suit an unprivileged sandbox: runc
# with cgroupfs (crun refuses hybrid cgroups) and ulimits no higher than the
# caller's (raising them is not permitted there; nproc at most 4096).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-target/release/egress-sentinel}
[[ -x $bin ]] || { echo "no binary at $bin: cargo build --release --locked" >&2; exit 2; }

work=$(mktemp -d)
trap 'buildah "${store[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)

# The root filesystem: binary, libraries (with the loader), CA bundle, user.
root="$work/ctx/rootfs"
install -D -m 0755 "$bin" "$root/usr/local/bin/egress-sentinel"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
install -d "$root/etc"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' > "$root/etc/passwd"
echo 'nonroot:x:65532:' > "$root/etc/group"
install -d -m 1777 "$root/tmp"
cp k8s/image/Containerfile.scratch "$work/ctx/Containerfile"

tag=localhost/egress-sentinel:ci
buildah "${store[@]}" bud --isolation chroot --quiet -t "$tag" "$work/ctx" >/dev/null
echo "image: $(buildah "${store[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$tag")"

nproc=$(ulimit -Hu); [[ $nproc == unlimited || $nproc -gt 4096 ]] && nproc=4096
run=(podman "${store[@]}" --runtime "$(command -v runc)" --cgroup-manager cgroupfs
  run --rm --network none --read-only --user 65532:65532
  --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")

version=$("${run[@]}" "$tag" --version)
echo "in the image: $version"
[[ $version == "egress-sentinel $(grep -m1 '^version' Cargo.toml | cut -d'"' -f2)" ]] \
  || { echo "unexpected --version: $version" >&2; exit 1; }
"${run[@]}" -v "$PWD/examples/egress-sentinel.toml:/etc/egress-sentinel/egress-sentinel.toml:ro" \
  "$tag" check-config --config /etc/egress-sentinel/egress-sentinel.toml
"${run[@]}" "$tag" demo > "$work/demo.txt" \
  || { cat "$work/demo.txt"; echo "demo failed in the image" >&2; exit 1; }
echo "demo in the image: $(tail -n 1 "$work/demo.txt")"
