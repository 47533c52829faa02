#!/usr/bin/env bash
# Idempotent set-up: Debian packages (as root), the lab user (as root), and .venv with the project.
# Without root it installs nothing system-wide and says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# As root, the lab user runs the rate limiter's nodes from .venv, so .venv is built on
# Debian's python3: an interpreter under /root (pyenv, say) is out of that user's reach.
if [[ $EUID -eq 0 && -z ${PYTHON:-} && -x /usr/bin/python3 ]]; then
  PYTHON=/usr/bin/python3
fi
PYTHON=${PYTHON:-python3}
LAB_USER=${OPERATOR_LAB_USER:-operator-lab}

missing=()
while read -r pkg; do
  [[ -z "$pkg" || "$pkg" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < scripts/debian-packages.txt

if ((${#missing[@]})); then
  if [[ $EUID -eq 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages (the lab and some tests need them):"
    echo "    sudo apt-get install -y ${missing[*]}"
  fi
fi

if [[ $EUID -eq 0 ]] && ! id "$LAB_USER" >/dev/null 2>&1; then
  echo "setup: creating the unprivileged lab user '$LAB_USER'"
  useradd --system --create-home --home-dir "/var/lib/$LAB_USER" --shell /usr/sbin/nologin "$LAB_USER"
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python 3.11 or newer is needed; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

if [[ $EUID -eq 0 && -x .venv/bin/python ]] &&
  ! runuser -u "$LAB_USER" -- .venv/bin/python -c '' 2>/dev/null; then
  echo "setup: rebuilding .venv on $PYTHON: the lab user '$LAB_USER' cannot run the current one"
  rm -rf .venv
fi

stamp=.venv/.installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "setup: creating .venv and installing operator-ai with its dev extras"
  [[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/operator)"
