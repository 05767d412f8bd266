#!/bin/bash
# apt-install.sh PKG...: installs the Debian packages of PKG... that are
# missing, without starting their services. On a host booted with systemd,
# installing docker-registry or containerd starts and enables their units:
# docker-registry then holds 127.0.0.1:5000, which the conformance kit's
# registry needs, and neither was asked for (the tests run their own). So
# the install runs with a policy-rc.d that refuses every start, and the
# units of those two, when this call installed them, are disabled
# afterwards. A service the operator had before (its package already
# installed) is never touched, nor are host services such as apparmor's.
set -euo pipefail

missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
((${#missing[@]})) || exit 0
echo "setup: installing ${missing[*]}"
rcd=/usr/sbin/policy-rc.d
ours=0
if [ ! -e "$rcd" ]; then
	printf '#!/bin/sh\n# berth setup: no service starts during its package installs\nexit 101\n' >"$rcd"
	chmod 0755 "$rcd"
	ours=1
fi
trap '[ "$ours" = 1 ] && rm -f "$rcd"' EXIT
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -d /run/systemd/system ]; then
	for p in "${missing[@]}"; do
		case "$p" in docker-registry | containerd) ;; *) continue ;; esac
		# The units a package ships (its /lib/systemd/system files).
		for unit in $(dpkg-query -L "$p" 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/]+\.(service|socket)$' || true); do
			u=$(basename "$unit")
			if systemctl is-enabled --quiet "$u" 2>/dev/null || systemctl is-active --quiet "$u" 2>/dev/null; then
				systemctl disable --now "$u" >/dev/null 2>&1 || true
				echo "setup: disabled $u (installed by $p; berth runs what it needs itself)"
			fi
		done
	done
fi
