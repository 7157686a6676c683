#!/bin/sh
# build.sh BIN VERSION OUTDIR: package the hsmkms binary BIN as
# OUTDIR/hsmkms_<version>_<arch>.deb with dpkg-deb and print the file's path.
# VERSION may be a git description (v1.2.0-3-gabc, abc1234-dirty); it is turned into a
# Debian version (1.2.0+3+gabc, 0~gitabc1234+dirty), which must start with a digit.
set -eu

bin=$1 version=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)

v=${version#v}
case $v in
[0-9]*.*) ;; # from a tag: 1.2.0, 1.2.0-3-gabc1234
*) v=0~git$v ;; # a bare commit: abc1234, 890d475-dirty
esac
v=$(printf %s "$v" | tr -- - +)
arch=$(dpkg --print-architecture)

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0755 "$bin" "$root/usr/bin/hsmkms"
install -D -m 0644 "$here/hsmkms.service" "$root/lib/systemd/system/hsmkms.service"
install -D -m 0644 "$here/README" "$root/etc/hsmkms/README"
install -D -m 0600 "$here/hsmkms.env" "$root/etc/hsmkms/hsmkms.env"
install -d -m 0700 "$root/var/lib/hsmkms"
install -d -m 0755 "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
echo /etc/hsmkms/hsmkms.env >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: hsmkms
Version: $v
Architecture: $arch
Maintainer: hsmkms maintainers <hsmkms@localhost>
Installed-Size: $size
Depends: libc6, softhsm2
Section: net
Priority: optional
Homepage: https://github.com/hsmkms/hsmkms
Description: KMIP key server whose keys live in an HSM
 hsmkms serves KMIP 1.0-1.4 over mutual TLS to MongoDB (encrypted storage
 engine, client-side field level encryption), Percona Server for MongoDB and
 other KMIP clients. Keys are generated and used inside a PKCS#11 token
 (SoftHSM2 built in, or a hardware HSM) and stored wrapped in SQLite.
 See /etc/hsmkms/README to get started.
CONTROL

mkdir -p "$out"
deb="$out/hsmkms_${v}_${arch}.deb"
dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$deb" >/dev/null
echo "$deb"
