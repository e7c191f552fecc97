#!/usr/bin/env bash
# Builds local stand-ins for the Dockerfile's two base images, for machines that cannot reach mcr.microsoft.com
# (this project's CI machines can reach only the NuGet, npm and Debian registries). Each is a minimal Debian 12
# (debootstrap) plus this machine's .NET, with the environment Microsoft's images set: the "sdk" one has the whole
# SDK, the "aspnet" one only the .NET and ASP.NET Core runtimes and the non-root user `app` (uid $APP_UID, 1654).
#
# They are tagged with the official names (mcr.microsoft.com/dotnet/sdk:10.0 and .../aspnet:10.0) so that the
# Dockerfile builds unchanged, but only inside the container storage given by --root: never in the machine's default
# storage, where they would hide the real images. Needs root, buildah and debootstrap. Idempotent: an existing image
# is kept.
#
#   scripts/local-base-images.sh --root /var/tmp/helixagent-containers/storage
set -euo pipefail

root="" runroot=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$2"; shift 2 ;;
    --runroot) runroot="$2"; shift 2 ;;
    *) echo "usage: $0 --root DIR [--runroot DIR]" >&2; exit 2 ;;
  esac
done
[ -n "$root" ] || { echo "local-base-images: --root DIR is required (never the machine's default storage)" >&2; exit 2; }
[ -n "$runroot" ] || runroot="$root-run"
[ "$(id -u)" -eq 0 ] || { echo "local-base-images: needs root (buildah mount, debootstrap)" >&2; exit 1; }
command -v buildah >/dev/null && command -v debootstrap >/dev/null \
  || { echo "local-base-images: needs buildah and debootstrap (apt-get install buildah debootstrap)" >&2; exit 1; }

bah() { buildah --root "$root" --runroot "$runroot" "$@"; }
sdk_image=mcr.microsoft.com/dotnet/sdk:10.0
runtime_image=mcr.microsoft.com/dotnet/aspnet:10.0
if bah inspect --type image "$sdk_image" >/dev/null 2>&1 && bah inspect --type image "$runtime_image" >/dev/null 2>&1; then
  exit 0
fi

dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime_version=$(ls "$dotnet_root/shared/Microsoft.NETCore.App" | sort -V | tail -1)
aspnet_version=$(ls "$dotnet_root/shared/Microsoft.AspNetCore.App" | sort -V | tail -1)
sdk_version=$(ls "$dotnet_root/sdk" | sort -V | tail -1)

rootfs="$root-rootfs"
if [ ! -f "$rootfs/.complete" ]; then
  rm -rf "$rootfs"
  echo "local-base-images: debootstrap bookworm (minbase) into $rootfs" >&2
  debootstrap --variant=minbase --include=ca-certificates,libicu72,libssl3,tzdata bookworm "$rootfs" \
    http://deb.debian.org/debian >"$rootfs.log" 2>&1 || { echo "local-base-images: debootstrap failed, see $rootfs.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  touch "$rootfs/.complete"
fi

# What Microsoft's runtime-deps/runtime/aspnet images set.
common_env=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env APP_UID=1654 --env ASPNETCORE_HTTP_PORTS=8080 --env DOTNET_RUNNING_IN_CONTAINER=true
  --env "DOTNET_VERSION=$runtime_version" --env "ASPNET_VERSION=$aspnet_version")

build() { # build IMAGE WHAT
  local image="$1" what="$2" ctr mnt
  ctr=$(bah from scratch)
  mnt=$(bah mount "$ctr")
  cp -a "$rootfs/." "$mnt/"
  rm -f "$mnt/.complete"
  mkdir -p "$mnt/usr/share/dotnet/shared"
  cp -a "$dotnet_root/dotnet" "$dotnet_root/host" "$mnt/usr/share/dotnet/"
  mkdir -p "$mnt/usr/share/dotnet/shared/Microsoft.NETCore.App" "$mnt/usr/share/dotnet/shared/Microsoft.AspNetCore.App"
  cp -a "$dotnet_root/shared/Microsoft.NETCore.App/$runtime_version" "$mnt/usr/share/dotnet/shared/Microsoft.NETCore.App/"
  cp -a "$dotnet_root/shared/Microsoft.AspNetCore.App/$aspnet_version" "$mnt/usr/share/dotnet/shared/Microsoft.AspNetCore.App/"
  ln -sf /usr/share/dotnet/dotnet "$mnt/usr/bin/dotnet"
  # Trust what this machine trusts (a proxy's CA in /usr/local/share/ca-certificates), as the official images
  # trust the public roots.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$mnt/usr/local/share/ca-certificates/"
    chroot "$mnt" update-ca-certificates >/dev/null 2>&1
  fi
  chroot "$mnt" groupadd --system --gid 1654 app
  chroot "$mnt" useradd --uid 1654 --gid 1654 --create-home --home-dir /home/app --shell /bin/false app
  if [ "$what" = sdk ]; then
    cp -a "$dotnet_root/sdk" "$dotnet_root/sdk-manifests" "$dotnet_root/packs" "$mnt/usr/share/dotnet/"
    bah config "${common_env[@]}" --env "DOTNET_SDK_VERSION=$sdk_version" --env DOTNET_NOLOGO=true \
      --env DOTNET_GENERATE_ASPNET_CERTIFICATE=false --env DOTNET_USE_POLLING_FILE_WATCHER=true \
      --env NUGET_XMLDOC_MODE=skip ${NUGET_CERT_REVOCATION_MODE:+--env NUGET_CERT_REVOCATION_MODE=$NUGET_CERT_REVOCATION_MODE} \
      --cmd /bin/bash "$ctr"
  else
    bah config "${common_env[@]}" "$ctr"
  fi
  bah unmount "$ctr" >/dev/null
  bah commit --quiet "$ctr" "$image" >/dev/null
  bah rm "$ctr" >/dev/null
  local sdk_note=""
  [ "$what" = sdk ] && sdk_note=", SDK $sdk_version"
  echo "local-base-images: $image (Debian 12, .NET $runtime_version, ASP.NET Core $aspnet_version$sdk_note)" >&2
}
bah inspect --type image "$runtime_image" >/dev/null 2>&1 || build "$runtime_image" runtime
bah inspect --type image "$sdk_image" >/dev/null 2>&1 || build "$sdk_image" sdk
