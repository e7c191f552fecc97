#!/usr/bin/env bash
# Builds local stand-ins for the Dockerfile's two base images, for machines that cannot reach mcr.microsoft.com
# (this project's CI machines can reach only the NuGet, npm and Debian registries). Each is a minimal Debian 12
# (mmdebstrap) plus this machine's .NET, with the environment Microsoft's images set: the "aspnet" one has the .NET
# and ASP.NET Core runtimes and the non-root user `app` (uid $APP_UID, 1654), the "sdk" one adds the whole SDK.
#
# They are tagged with the official names (mcr.microsoft.com/dotnet/sdk:10.0 and .../aspnet:10.0) so that the
# Dockerfile builds unchanged, but only inside the container storage given by --root: never in the machine's default
# storage, where they would hide the real images. Works as root and as an ordinary user (rootless buildah and
# mmdebstrap's unshare mode, with the user's /etc/subuid range). Idempotent: existing images are kept.
#
#   scripts/local-base-images.sh --root DIR [--runroot DIR]
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
command -v buildah >/dev/null && command -v mmdebstrap >/dev/null \
  || { echo "local-base-images: needs buildah and mmdebstrap (./scripts/install-deps.sh)" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ] && ! grep -q "^$(id -un):" /etc/subuid 2>/dev/null; then
  echo "local-base-images: rootless buildah needs a range for $(id -un) in /etc/subuid and /etc/subgid (sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $(id -un))" >&2
  exit 1
fi
bah() { buildah --root "$root" --runroot "$runroot" --storage-driver overlay "$@"; }
sdk_image=mcr.microsoft.com/dotnet/sdk:10.0
runtime_image=mcr.microsoft.com/dotnet/aspnet:10.0
if bah inspect --type image "$sdk_image" >/dev/null 2>&1 && bah inspect --type image "$runtime_image" >/dev/null 2>&1; then
  exit 0
fi

dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime_version=$(ls "$dotnet_root/shared/Microsoft.NETCore.App" | sort -V | tail -1)
aspnet_version=$(ls "$dotnet_root/shared/Microsoft.AspNetCore.App" | sort -V | tail -1)
sdk_version=$(ls "$dotnet_root/sdk" | sort -V | tail -1)

# Debian 12 with the user `app`, /usr/bin/dotnet (a link, as in the official images) and the machine's own CA certificates (a proxy's CA in /usr/local/share/ca-certificates:
# the official images trust the public roots, this machine reaches NuGet through that proxy).
rootfs="$root-debian12.tar"
if [ ! -s "$rootfs" ]; then
  mkdir -p "$(dirname "$rootfs")"
  echo "local-base-images: mmdebstrap bookworm (minbase) into $rootfs" >&2
  mode=root
  [ "$(id -u)" -eq 0 ] || mode=unshare
  mmdebstrap --mode="$mode" --format=tar --variant=minbase --include=ca-certificates,libicu72,libssl3,tzdata \
    --customize-hook='for c in /usr/local/share/ca-certificates/*.crt; do [ -f "$c" ] && cp "$c" "$1/usr/local/share/ca-certificates/"; done; chroot "$1" update-ca-certificates >/dev/null 2>&1' \
    --customize-hook='chroot "$1" groupadd --gid 1654 app && chroot "$1" useradd --uid 1654 --gid 1654 --create-home --home-dir /home/app --shell /bin/false app' \
    --customize-hook='ln -s /usr/share/dotnet/dotnet "$1/usr/bin/dotnet"' \
    --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
    bookworm "$rootfs.part" http://deb.debian.org/debian >"$rootfs.log" 2>&1 \
    || { echo "local-base-images: mmdebstrap failed, see $rootfs.log" >&2; exit 1; }
  mv "$rootfs.part" "$rootfs"
fi

# What Microsoft's runtime-deps/runtime/aspnet images set.
env_args=(--env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env APP_UID=1654
  --env ASPNETCORE_HTTP_PORTS=8080 --env DOTNET_RUNNING_IN_CONTAINER=true
  --env "DOTNET_VERSION=$runtime_version" --env "ASPNET_VERSION=$aspnet_version")

if ! bah inspect --type image "$runtime_image" >/dev/null 2>&1; then
  ctr=$(bah from scratch)
  bah add --quiet "$ctr" "$rootfs" /
  bah add --quiet "$ctr" "$dotnet_root/dotnet" /usr/share/dotnet/dotnet
  bah add --quiet "$ctr" "$dotnet_root/host" /usr/share/dotnet/host
  bah add --quiet "$ctr" "$dotnet_root/shared/Microsoft.NETCore.App/$runtime_version" "/usr/share/dotnet/shared/Microsoft.NETCore.App/$runtime_version"
  bah add --quiet "$ctr" "$dotnet_root/shared/Microsoft.AspNetCore.App/$aspnet_version" "/usr/share/dotnet/shared/Microsoft.AspNetCore.App/$aspnet_version"
  bah config "${env_args[@]}" "$ctr"
  bah commit --quiet "$ctr" "$runtime_image" >/dev/null
  bah rm "$ctr" >/dev/null
  echo "local-base-images: $runtime_image (Debian 12, .NET $runtime_version, ASP.NET Core $aspnet_version)" >&2
fi
if ! bah inspect --type image "$sdk_image" >/dev/null 2>&1; then
  ctr=$(bah from "$runtime_image")
  for d in sdk sdk-manifests packs; do
    bah add --quiet "$ctr" "$dotnet_root/$d" "/usr/share/dotnet/$d"
  done
  bah config --env "DOTNET_SDK_VERSION=$sdk_version" --env DOTNET_NOLOGO=true --env DOTNET_GENERATE_ASPNET_CERTIFICATE=false \
    --env DOTNET_USE_POLLING_FILE_WATCHER=true --env NUGET_XMLDOC_MODE=skip \
    ${NUGET_CERT_REVOCATION_MODE:+--env NUGET_CERT_REVOCATION_MODE=$NUGET_CERT_REVOCATION_MODE} --cmd /bin/bash "$ctr"
  bah commit --quiet "$ctr" "$sdk_image" >/dev/null
  bah rm "$ctr" >/dev/null
  echo "local-base-images: $sdk_image (the above plus SDK $sdk_version)" >&2
fi
