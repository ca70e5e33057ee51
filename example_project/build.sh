#!/usr/bin/env bash
# build.sh — build the offerings service for every arch and push each variant plus the multi-arch
# index to the local registry: the flow a user's CI runs before `docker manifest push`.
#
#   REGISTRY/example/offerings:TAG-ARCH   one genuine image per arch (its config says the arch)
#   REGISTRY/example/offerings:TAG        the index over them
#
# --compile=cross (default) compiles on the host with Debian's cross gcc against a sysroot of the
# target arch, then builds the image for that arch and runs the binary once in it under qemu;
# --compile=emulated compiles inside `docker build --platform` from the build base, all under
# qemu.  ../example_project/README.md has the timings behind the default.
# An arch whose image in the registry carries this recipe's label (sources + base digests) is not
# rebuilt; pass --force to rebuild anyway (--force-bases: the base images too).
#
# Usage: build.sh [--arch amd64,arm64,s390x] [--tag 1.0] [--compile cross|emulated]
#                 [--builder docker|buildah] [--registry HOST:PORT] [--jobs N] [--force]
#                 [--force-bases]
set -euo pipefail

BUILD_VERSION=1 # bump when this script changes what it builds
HERE=$(cd "$(dirname "$0")" && pwd)
ARCHES=amd64,arm64,s390x
TAG=1.0
COMPILE=cross
BUILDER=docker
REGISTRY=${MULTIARCH_EXAMPLE_REGISTRY:-127.0.0.1:5000}
CACHE_DIR=${MULTIARCH_EXAMPLE_CACHE:-/var/cache/pytest-multiarch-example}
JOBS=$(nproc)
FORCE=0
FORCE_BASES=()
BASE_JOBS=()
SUITE=bookworm
REPO=example/offerings
SYSROOT_PACKAGES=libc6-dev,libmicrohttpd-dev,libmariadb-dev
MIRRORS=(
    "deb http://deb.debian.org/debian $SUITE main"
    "deb http://deb.debian.org/debian $SUITE-updates main"
    "deb http://deb.debian.org/debian-security $SUITE-security main"
)
# shellcheck source=images/lib.sh
source "$HERE/images/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit "${1:-0}"; }

while (($#)); do
    case $1 in
        --arch) ARCHES=$2; shift ;;
        --arch=*) ARCHES=${1#*=} ;;
        --tag) TAG=$2; shift ;;
        --tag=*) TAG=${1#*=} ;;
        --compile) COMPILE=$2; shift ;;
        --compile=*) COMPILE=${1#*=} ;;
        --builder) BUILDER=$2; shift ;;
        --builder=*) BUILDER=${1#*=} ;;
        --registry) REGISTRY=$2; shift ;;
        --jobs) JOBS=$2; BASE_JOBS=(--jobs "$2"); shift ;;
        --force) FORCE=1 ;;
        --force-bases) FORCE_BASES=(--force) ;;
        -h|--help) usage 0 ;;
        *) echo "unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done
case $COMPILE in cross|emulated) ;; *) die "--compile must be cross or emulated, not '$COMPILE'" ;; esac
case $BUILDER in
    docker) ;;
    buildah) command -v buildah >/dev/null || die "--builder=buildah needs buildah (apt-get install buildah)" ;;
    *) die "--builder must be docker or buildah, not '$BUILDER'" ;;
esac
IFS=, read -ra arches <<<"$ARCHES"

gnu_triplet() {
    case $1 in
        amd64) echo x86_64-linux-gnu ;; arm64) echo aarch64-linux-gnu ;; s390x) echo s390x-linux-gnu ;;
        ppc64el|ppc64le) echo powerpc64le-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;;
        *) die "no cross toolchain known for $1" ;;
    esac
}

ensure_cross_compilers() {
    local missing=() arch triplet
    for arch in "${arches[@]}"; do
        triplet=$(gnu_triplet "$arch")
        command -v "$triplet-gcc" >/dev/null || missing+=("gcc-${triplet//_/-}")
    done
    ((${#missing[@]} == 0)) && return 0
    log "installing cross compilers: ${missing[*]}"
    logged "$CACHE_DIR/apt-cross.log" apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
}

sysroot_hash() { printf '%s\n' "$SUITE" "$1" "$SYSROOT_PACKAGES" "${MIRRORS[@]}" | sha256sum | cut -c1-16; }

# A root filesystem of ARCH with the -dev packages, unpacked without running anything (no qemu).
ensure_sysroot() { # arch -> path
    local arch=$1 dir tmp start=$SECONDS
    dir=$CACHE_DIR/sysroot/$arch-$(sysroot_hash "$arch")
    if [[ ! -d $dir ]]; then
        mkdir -p "$CACHE_DIR/sysroot"
        tmp=$dir.partial-$BASHPID
        rm -rf "$tmp"
        logged "$CACHE_DIR/sysroot/$arch.log" mmdebstrap --mode=root --variant=extract --architectures="$arch" \
            --include="$SYSROOT_PACKAGES" --dpkgopt='path-exclude=/usr/share/*' \
            --format=directory "$SUITE" "$tmp" "${MIRRORS[@]}"
        mv "$tmp" "$dir"
        log "TIMING sysroot $arch $((SECONDS - start))s"
    fi
    echo "$dir"
}

# The per-arch digest of a base image, so builds name it pinned (repo@sha256:...).
base_ref() { # base arch
    local digest
    digest=$(registry_digest "$REGISTRY" "example/base-$1" "$SUITE-$2")
    [[ -n $digest ]] || die "$REGISTRY/example/base-$1:$SUITE-$2 missing; run images/build-base-images --base $1"
    echo "$REGISTRY/example/base-$1@$digest"
}

recipe_hash() { # arch runtime-ref build-input
    {
        echo "v=$BUILD_VERSION compile=$COMPILE arch=$1 runtime=$2 input=$3"
        cd "$HERE/service" && sha256sum offerings.c Makefile Dockerfile Dockerfile.cross
    } | sha256sum | cut -c1-16
}

build_arch() { # arch
    local arch=$1 runtime input hash ctx start=$SECONDS sysroot triplet
    runtime=$(base_ref mariadb "$arch")
    if [[ $COMPILE == cross ]]; then
        input=sysroot-$(sysroot_hash "$arch")
    else
        input=$(base_ref build "$arch")
    fi
    hash=$(recipe_hash "$arch" "$runtime" "$input")
    if [[ $FORCE == 0 && $(registry_recipe "$REGISTRY" "$REPO" "$TAG-$arch") == "$hash" ]]; then
        log "$REGISTRY/$REPO:$TAG-$arch already built from recipe $hash; not rebuilt"
        return 0
    fi
    ctx=$CACHE_DIR/context/offerings-$arch
    rm -rf "$ctx" && mkdir -p "$ctx"
    local build_args=(--build-arg "RUNTIME_BASE=$runtime")
    if [[ $COMPILE == cross ]]; then
        sysroot=$(ensure_sysroot "$arch")
        triplet=$(gnu_triplet "$arch")
        local t0=$SECONDS
        logged "$ctx.make.log" make -s -C "$HERE/service" CC="$triplet-gcc" SYSROOT="$sysroot" OUT="$ctx/offerings"
        log "TIMING cross-compile $arch $((SECONDS - t0))s"
        cp "$HERE/service/Dockerfile.cross" "$ctx/Dockerfile"
    else
        cp "$HERE/service/Dockerfile" "$HERE/service/Makefile" "$HERE/service/offerings.c" "$ctx/"
        build_args+=(--build-arg "BUILD_BASE=$input")
    fi
    local t1=$SECONDS
    if [[ $BUILDER == buildah ]]; then
        # --override-arch records the arch in the config and runs RUN steps under qemu; runc there
        # needs ulimits within this VM's hard limits (TESTBED.md: "error setting rlimit type 7").
        logged "$ctx.build.log" buildah bud --override-arch "$arch" --override-os linux \
            --tls-verify=false --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 "${build_args[@]}" \
            --label "io.pytest-multiarch.recipe=$hash" -t "$REGISTRY/$REPO:$TAG-$arch" "$ctx"
        log "TIMING buildah bud ($COMPILE) $arch $((SECONDS - t1))s"
        logged "$ctx.push.log" buildah push --tls-verify=false "$REGISTRY/$REPO:$TAG-$arch" \
            "docker://$REGISTRY/$REPO:$TAG-$arch"
    else
        # The legacy builder records --platform in the image config and runs RUN steps under qemu.
        logged "$ctx.build.log" env DOCKER_BUILDKIT=0 docker build --platform "linux/$arch" "${build_args[@]}" \
            --label "io.pytest-multiarch.recipe=$hash" -t "$REGISTRY/$REPO:$TAG-$arch" "$ctx"
        log "TIMING docker build ($COMPILE) $arch $((SECONDS - t1))s"
        logged "$ctx.push.log" docker push "$REGISTRY/$REPO:$TAG-$arch"
    fi
    rm -rf "$ctx"
    log "TIMING service $arch $((SECONDS - start))s total; pushed $REGISTRY/$REPO:$TAG-$arch"
}

# lib.sh's push_index for --builder=buildah: the per-arch images (by digest, pulled or built
# earlier) in a buildah manifest list, pushed with `buildah manifest push --all`.  Prints the
# index digest.
buildah_push_index() { # registry repo index-tag arches...
    local registry=$1 repo=$2 tag=$3 arch digest list=localhost/offerings-index
    shift 3
    buildah manifest rm "$list" >/dev/null 2>&1 || true
    buildah manifest create "$list" >/dev/null
    for arch in "$@"; do
        digest=$(registry_digest "$registry" "$repo" "$tag-$arch")
        [[ -n $digest ]] || die "$registry/$repo:$tag-$arch is not in the registry; cannot make the index"
        logged "$CACHE_DIR/manifest-add.log" buildah manifest add --tls-verify=false --os linux \
            --arch "$arch" "$list" "docker://$registry/$repo@$digest"
    done
    logged "$CACHE_DIR/manifest-push.log" buildah manifest push --all --tls-verify=false "$list" \
        "docker://$registry/$repo:$tag"
    buildah manifest rm "$list" >/dev/null
    registry_digest "$registry" "$repo" "$tag" "$INDEX_TYPES"
}

main() {
    local start=$SECONDS pids=() arch failed=0 bases=mariadb digest
    docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/provision-host first"
    # One build at a time per machine (parallel test workers may all ask for the images).
    mkdir -p "$CACHE_DIR"
    exec 9>"$CACHE_DIR/build.lock"
    flock 9
    require_emulation "${arches[@]}"
    [[ $COMPILE == emulated ]] && bases=mariadb,build
    "$HERE/images/build-base-images" --base "$bases" --arch "$ARCHES" --registry "$REGISTRY" \
        "${BASE_JOBS[@]}" "${FORCE_BASES[@]}"
    [[ $COMPILE == cross ]] && ensure_cross_compilers
    for arch in "${arches[@]}"; do
        while (($(jobs -rp | wc -l) >= JOBS)); do wait -n || failed=1; done
        LOG_TAG=$arch build_arch "$arch" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    ((failed == 0)) || die "the service failed to build for some arch; see above"
    if [[ $BUILDER == buildah ]]; then
        digest=$(buildah_push_index "$REGISTRY" "$REPO" "$TAG" "${arches[@]}")
    else
        digest=$(push_index "$REGISTRY" "$REPO" "$TAG" "${arches[@]}")
    fi
    log "pushed $REGISTRY/$REPO:$TAG@$digest ($ARCHES) in $((SECONDS - start))s"
}

main
