#!/bin/sh
# Installs the deploy-paradigm binary from a GitHub release, after checking its SHA-256 against the release's SHA256SUMS.
#
#   curl -fsSL https://github.com/deploy-paradigm/deploy-paradigm/releases/latest/download/install.sh | sudo sh
#   curl -fsSL .../install.sh | sudo sh -s v0.2.0      # a given version
#   sh install.sh --help                                # arguments and environment variables
#
# Keep this script simple and easily auditable: POSIX sh, no eval, and nothing downloaded is ever given to a shell.
# Everything happens in main(), called on the last line, so a truncated `curl | sh` runs nothing at all.

set -eu

usage() {
	cat <<'EOF'
Install deploy-paradigm: download the release binary for this machine, verify its SHA-256 against the release's
SHA256SUMS, and install it (atomically) as <dir>/deploy-paradigm.

Usage: install.sh [options] [version]

Arguments:
  version       the release to install, e.g. v0.2.0 (or 0.2.0); default: the latest release

Options:
  -h, --help    show this help and exit

Environment variables:
  DEPLOY_PARADIGM_INSTALL_DIR   where to install (default: /usr/local/bin, created if missing)
  DEPLOY_PARADIGM_DOWNLOAD_URL  the releases base URL, for mirrors and tests
                                (default: https://github.com/deploy-paradigm/deploy-paradigm/releases);
                                files are fetched from <base>/latest/download/<file>,
                                or <base>/download/<version>/<file>
  DEPLOY_PARADIGM_TARGET        skip detection and install this target: x86_64-unknown-linux-gnu,
                                aarch64-unknown-linux-gnu, x86_64-apple-darwin or aarch64-apple-darwin
  DEPLOY_PARADIGM_DOWNLOADER    curl or wget (default: curl if installed, else wget)
  TMPDIR                        where the download is staged before it is verified (default: /tmp)

Exit status: 0 installed, 1 failed (nothing was changed), 2 bad arguments.
EOF
}

supported="x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, x86_64-apple-darwin, aarch64-apple-darwin"

# die MESSAGE [HINT]: the error on stderr, exit 1.
die() {
	echo "error: $1" >&2
	if [ $# -gt 1 ]; then echo "hint: $2" >&2; fi
	exit 1
}

usage_error() {
	echo "error: $1" >&2
	echo "Run 'install.sh --help' for usage." >&2
	exit 2
}

detect_target() {
	if [ -n "${DEPLOY_PARADIGM_TARGET:-}" ]; then
		case $DEPLOY_PARADIGM_TARGET in
		x86_64-unknown-linux-gnu | aarch64-unknown-linux-gnu | x86_64-apple-darwin | aarch64-apple-darwin)
			target=$DEPLOY_PARADIGM_TARGET
			return
			;;
		esac
		die "unsupported target \"$DEPLOY_PARADIGM_TARGET\" (from DEPLOY_PARADIGM_TARGET); supported: $supported"
	fi
	os=$(uname -s) || die "cannot run uname -s to detect the operating system"
	arch=$(uname -m) || die "cannot run uname -m to detect the architecture"
	case "$os $arch" in
	"Linux x86_64" | "Linux amd64") target=x86_64-unknown-linux-gnu ;;
	"Linux aarch64" | "Linux arm64") target=aarch64-unknown-linux-gnu ;;
	"Darwin x86_64") target=x86_64-apple-darwin ;;
	"Darwin arm64" | "Darwin aarch64") target=aarch64-apple-darwin ;;
	*)
		die "unsupported platform \"$os $arch\" (uname -s, uname -m); supported: Linux x86_64/aarch64 and Darwin x86_64/arm64 ($supported)" \
			"set DEPLOY_PARADIGM_TARGET to one of these to override the detection"
		;;
	esac
}

choose_downloader() {
	case ${DEPLOY_PARADIGM_DOWNLOADER:-} in
	"")
		if command -v curl >/dev/null 2>&1; then
			downloader=curl
		elif command -v wget >/dev/null 2>&1; then
			downloader=wget
		else
			die "neither curl nor wget was found: install one of them (e.g. apt-get install curl) and run this again"
		fi
		;;
	curl | wget)
		downloader=$DEPLOY_PARADIGM_DOWNLOADER
		command -v "$downloader" >/dev/null 2>&1 ||
			die "DEPLOY_PARADIGM_DOWNLOADER=$downloader, but $downloader was not found"
		;;
	*) die "DEPLOY_PARADIGM_DOWNLOADER must be curl or wget (got \"$DEPLOY_PARADIGM_DOWNLOADER\")" ;;
	esac
}

# download URL FILE: fails on HTTP errors (curl -f; wget exits non-zero on 4xx/5xx).
download() {
	echo "Downloading $1"
	status=0
	# From an https base, never follow a redirect down to plain http.
	case "$1" in
	https://*)
		if [ "$downloader" = curl ]; then
			curl -fsSL --proto '=https' --tlsv1.2 -o "$2" "$1" || status=$?
		else
			wget -q --https-only -O "$2" "$1" || status=$?
		fi
		;;
	*)
		if [ "$downloader" = curl ]; then
			curl -fsSL -o "$2" "$1" || status=$?
		else
			wget -q -O "$2" "$1" || status=$?
		fi
		;;
	esac
	[ "$status" -eq 0 ] || die "could not download $1 ($downloader exit status $status)" \
		"check that this release exists and has an asset for $target, and that DEPLOY_PARADIGM_DOWNLOAD_URL (if set) is right"
}

# Which tool computes SHA-256: sha256sum (GNU coreutils), or shasum -a 256 (macOS, Perl).
choose_hasher() {
	if command -v sha256sum >/dev/null 2>&1; then
		hasher=sha256sum
	elif command -v shasum >/dev/null 2>&1; then
		hasher=shasum
	else
		die "neither sha256sum nor shasum was found: cannot verify the download"
	fi
}

sha256() {
	if [ "$hasher" = sha256sum ]; then
		sha256sum "$1" | cut -d ' ' -f 1
	else
		shasum -a 256 "$1" | cut -d ' ' -f 1
	fi
}

# The install directory: created if missing, and writable; checked before anything is downloaded.
check_install_dir() {
	if [ ! -d "$install_dir" ]; then
		mkdir -p "$install_dir" 2>/dev/null ||
			die "cannot create the install directory $install_dir" \
				"run this with sudo, or set DEPLOY_PARADIGM_INSTALL_DIR to a directory you can write (e.g. \$HOME/.local/bin)"
	fi
	[ -w "$install_dir" ] ||
		die "no permission to write to $install_dir" \
			"run this with sudo, or set DEPLOY_PARADIGM_INSTALL_DIR to a directory you can write (e.g. \$HOME/.local/bin)"
	[ ! -d "$install_dir/deploy-paradigm" ] ||
		die "$install_dir/deploy-paradigm is a directory: move it away first"
}

tmp_dir=""
staged=""
cleanup() {
	if [ -n "$staged" ]; then rm -f "$staged"; fi
	if [ -n "$tmp_dir" ]; then rm -rf "$tmp_dir"; fi
}

main() {
	version=""
	while [ $# -gt 0 ]; do
		case $1 in
		-h | --help)
			usage
			exit 0
			;;
		--)
			shift
			break
			;;
		-*) usage_error "unknown option $1" ;;
		*)
			[ -z "$version" ] || usage_error "only one version may be given (got $version and $1)"
			version=$1
			;;
		esac
		shift
	done
	if [ $# -gt 0 ]; then
		if [ -n "$version" ] || [ $# -gt 1 ]; then usage_error "only one version may be given"; fi
		version=$1
	fi
	case $version in
	"") ;;
	*[!A-Za-z0-9._+-]*) usage_error "\"$version\" is not a version (e.g. v0.2.0)" ;;
	v[0-9]*) ;;
	[0-9]*) version="v$version" ;;
	*) usage_error "\"$version\" is not a version (e.g. v0.2.0)" ;;
	esac

	detect_target
	choose_downloader
	choose_hasher
	install_dir=${DEPLOY_PARADIGM_INSTALL_DIR:-/usr/local/bin}
	install_dir=${install_dir%/}
	[ -n "$install_dir" ] || install_dir=/
	check_install_dir

	base=${DEPLOY_PARADIGM_DOWNLOAD_URL:-https://github.com/deploy-paradigm/deploy-paradigm/releases}
	base=${base%/}
	if [ -n "$version" ]; then
		url="$base/download/$version"
	else
		url="$base/latest/download"
	fi
	asset="deploy-paradigm-$target"
	dest="$install_dir/deploy-paradigm"

	trap cleanup EXIT
	trap 'exit 1' HUP INT TERM
	tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/deploy-paradigm.XXXXXX") || die "cannot create a temporary directory"

	echo "Installing deploy-paradigm ${version:-(latest)} for $target into $install_dir"
	download "$url/$asset" "$tmp_dir/$asset"
	download "$url/SHA256SUMS" "$tmp_dir/SHA256SUMS"

	# The line for the asset: "<sha256>  <name>" (or "<sha256> *<name>", binary mode).
	expected=$(awk -v name="$asset" '$2 == name || $2 == "*" name { print $1; exit }' "$tmp_dir/SHA256SUMS" |
		tr 'A-F' 'a-f')
	case $expected in
	"") die "SHA256SUMS from $url has no line for $asset: refusing to install an unverified binary" ;;
	*[!0-9a-f]*) die "SHA256SUMS from $url has a malformed line for $asset: refusing to install" ;;
	esac
	[ ${#expected} -eq 64 ] || die "SHA256SUMS from $url has a malformed line for $asset: refusing to install"
	actual=$(sha256 "$tmp_dir/$asset")
	[ -n "$actual" ] || die "$hasher failed on $tmp_dir/$asset"
	[ "$actual" = "$expected" ] ||
		die "checksum mismatch for $asset: expected $expected, got $actual; nothing was installed" \
			"the download is corrupt or was tampered with; try again, or check your mirror"
	echo "Verified SHA-256 $actual"

	# Staged next to the destination (same filesystem), so the final mv is a rename(2): whoever runs
	# deploy-paradigm sees either the old binary or the new one, never a partial file.
	# A fresh, unpredictable name (mktemp creates it, 0600), so nothing planted in the directory is written through.
	staged=$(mktemp "$install_dir/.deploy-paradigm.new.XXXXXX") || die "cannot create a file in $install_dir"
	cp "$tmp_dir/$asset" "$staged" || die "cannot write $staged"
	chmod 755 "$staged" || die "cannot chmod $staged"
	mv -f "$staged" "$dest" || die "cannot move the new binary into place as $dest"
	staged=""

	echo "Installed deploy-paradigm at $dest"
	if ! "$dest" --version; then
		echo "warning: $dest --version failed; the binary may not run on this machine" >&2
	fi
	case ":${PATH:-}:" in
	*":$install_dir:"*) ;;
	*) echo "note: $install_dir is not in your PATH; add it, or run $dest directly" ;;
	esac
}

main "$@"
