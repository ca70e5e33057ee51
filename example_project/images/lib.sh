# Shared by build-base-images and ../build.sh (sourced, not run).
# Talks to the plain-HTTP registry with curl + jq: what is there, under which digest, built from
# which recipe (the io.pytest-multiarch.recipe label in the image config).

MANIFEST_TYPES='application/vnd.docker.distribution.manifest.v2+json,application/vnd.oci.image.manifest.v1+json'
INDEX_TYPES='application/vnd.docker.distribution.manifest.list.v2+json,application/vnd.oci.image.index.v1+json'

log() { printf '%s [%s] %s\n' "$(date +%T)" "${LOG_TAG:-${0##*/}}" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The digest of REPO:REF (a single-platform manifest, or an index with ACCEPT=$INDEX_TYPES).
registry_digest() { # registry repo ref [accept]
    curl -fsS -o /dev/null -D - -H "Accept: ${4:-$MANIFEST_TYPES}" "http://$1/v2/$2/manifests/$3" 2>/dev/null |
        tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}'
}

# The recipe label of REPO:REF, or nothing when the tag is absent or unlabelled.
registry_recipe() { # registry repo ref
    local manifest config
    manifest=$(curl -fsS -H "Accept: $MANIFEST_TYPES" "http://$1/v2/$2/manifests/$3" 2>/dev/null) || return 0
    config=$(jq -r '.config.digest // empty' <<<"$manifest" 2>/dev/null)
    [[ -n $config ]] || return 0
    curl -fsS "http://$1/v2/$2/blobs/$config" 2>/dev/null |
        jq -r '.config.Labels["io.pytest-multiarch.recipe"] // empty'
}

# Pushes REGISTRY/REPO:INDEX_TAG as a Docker manifest list of the per-arch tags INDEX_TAG-ARCH,
# each referenced by digest and annotated with its platform.  Prints the index digest.
push_index() { # registry repo index-tag arches...
    local registry=$1 repo=$2 tag=$3 arch digest refs=() arches
    shift 3
    arches=("$@")
    for arch in "${arches[@]}"; do
        digest=$(registry_digest "$registry" "$repo" "$tag-$arch")
        [[ -n $digest ]] || die "$registry/$repo:$tag-$arch is not in the registry; cannot make the index"
        refs+=("$registry/$repo@$digest")
    done
    docker manifest rm "$registry/$repo:$tag" >/dev/null 2>&1 || true
    docker manifest create --insecure "$registry/$repo:$tag" "${refs[@]}" >/dev/null
    for i in "${!arches[@]}"; do
        docker manifest annotate --os linux --arch "${arches[$i]}" "$registry/$repo:$tag" "${refs[$i]}"
    done
    docker manifest push --insecure --purge "$registry/$repo:$tag" >/dev/null
    registry_digest "$registry" "$repo" "$tag" "$INDEX_TYPES"
}

# Runs "$@" with output to LOGFILE; on failure shows its tail and the log's path.
logged() { # logfile command...
    local logfile=$1
    shift
    if ! "$@" >"$logfile" 2>&1; then
        tail -n 25 "$logfile" >&2
        die "failed: $* (full log: $logfile)"
    fi
}

qemu_name() { case $1 in arm64) echo aarch64 ;; amd64) echo x86_64 ;; ppc64el|ppc64le) echo ppc64le ;; armhf) echo arm ;; *) echo "$1" ;; esac; }

require_emulation() { # arches...
    local host arch
    host=$(dpkg --print-architecture)
    for arch in "$@"; do
        [[ $arch == "$host" || -e /proc/sys/fs/binfmt_misc/qemu-$(qemu_name "$arch") ]] ||
            die "no qemu-user binfmt handler for $arch (/proc/sys/fs/binfmt_misc/qemu-$(qemu_name "$arch")); run scripts/provision-host"
    done
}

# Waits (up to 120 s) until ARCH's binfmt handler is enabled: tests on a shared machine switch
# handlers off for a moment to provoke exec format errors, and a build must not start then.
wait_for_handler() { # arch
    local f i
    [[ $1 == "$(dpkg --print-architecture)" ]] && return 0
    f=/proc/sys/fs/binfmt_misc/qemu-$(qemu_name "$1")
    for ((i = 0; i < 120; i++)); do
        [[ $(head -n1 "$f" 2>/dev/null) == enabled ]] && return 0
        ((i == 0)) && log "binfmt handler $f is disabled; waiting for it to come back"
        sleep 1
    done
    die "binfmt handler $f stayed disabled for 120 s; enable it: echo 1 > $f"
}
