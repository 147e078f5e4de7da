# Sourced by the system checks in tests/ (each starts a local cluster of
# real processes): a work directory removed at exit with every process
# the check started, and ports nothing listens on.
#
#   source tests/lib.sh               # from the repository root
#   start_work tally-console          # $WORK, cleaned up at exit
#   some-server & PIDS+=("$!")        # stopped at exit
#   read -r -a P < <(free_ports 6)    # six ports

PIDS=()

# start_work NAME: makes $WORK and stops $PIDS and removes $WORK at exit.
start_work() {
  WORK="$(mktemp -d "/tmp/$1.XXXXXX")"
  trap cleanup EXIT INT TERM
}

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# free_ports N: N distinct loopback ports nothing listens on, below the
# ephemeral range (so a connection's own port cannot take one meanwhile).
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
ports = set()
while len(ports) < int(sys.argv[1]):
    p = random.randrange(12000, 30000)
    try:
        s = socket.socket(); s.bind(("127.0.0.1", p)); s.close(); ports.add(p)
    except OSError:
        pass
print(" ".join(map(str, ports)))
PY
}
