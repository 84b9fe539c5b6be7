#!/bin/sh
# Install irisflow as a systemd service, or update an installation; run it again at will.
#
#   sudo deploy/install.sh                      install or update under /opt/irisflow
#   sudo deploy/install.sh --uninstall          remove the app, venv and units; keep config and data
#   sudo deploy/install.sh --uninstall --purge  remove config (drop-ins too), data and the irisflow user
#
# What goes where (paths inside the files are rewritten to the options):
#   PREFIX/app           the units' working directory (and the README they link to)
#   PREFIX/venv          the virtualenv: the lock (requirements.txt), then irisflow's wheel, which carries
#                        the default luigi.cfg and Iris CSV (or the venv given with --venv)
#   PREFIX/bin/irisflow  the CLI as the units run it (status, run, backfill)
#   PREFIX/share         prometheus/ (scrape config, alerts), alertmanager/ (mail routes) and grafana/
#                        (dashboard, provisioning)
#   SYSCONFDIR           luigi.cfg (the daemon's overlay), luigid.cfg, environment (secrets); kept
#                        once edited, the new version then lands beside as *.dist
#   UNITDIR              irisflow.service, luigid.service, irisflow-backfill@.service,
#                        irisflow-worker.service (extra hosts: README "Scale out")
#   /var/lib/irisflow    the daemon's state and output (StateDirectory=irisflow)
set -eu

usage() {
    cat <<'EOF'
usage: install.sh [options]          install or update
       install.sh --uninstall [--purge] [options]
options:
  --prefix DIR      app, venv, CLI and share files (default /opt/irisflow; env PREFIX)
  --sysconfdir DIR  configuration (default /etc/irisflow; env SYSCONFDIR)
  --unitdir DIR     systemd units (default /etc/systemd/system; env UNITDIR)
  --destdir DIR     stage every file under DIR, as packagers do (env DESTDIR); implies --no-user
                    and --no-systemctl, and needs --venv or --no-venv (a venv cannot be moved)
  --venv DIR        use this existing virtualenv, with irisflow installed in it, instead of
                    creating PREFIX/venv (it is left as it is)
  --wheel FILE      the irisflow wheel to install (default: one built from this checkout)
  --no-venv         leave the virtualenv alone (the units expect it at PREFIX/venv)
  --python PYTHON   the interpreter PREFIX/venv is made with (default python3; env PYTHON)
  --no-user         do not create the irisflow user, nor its state directories, nor hand it files
  --no-systemctl    do not reload systemd nor restart running units
  --uninstall       remove what install put in place, but not config, data or the user
  --purge           with --uninstall: also remove config, the units' drop-ins, /var/lib/irisflow,
                    /var/lib/luigid and the user
EOF
}

PREFIX=${PREFIX:-/opt/irisflow}
SYSCONFDIR=${SYSCONFDIR:-/etc/irisflow}
UNITDIR=${UNITDIR:-/etc/systemd/system}
DESTDIR=${DESTDIR:-}
PYTHON=${PYTHON:-python3}
VENV=
WHEEL=
MAKE_VENV=yes
MAKE_USER=yes
SYSTEMCTL=yes
ACTION=install
PURGE=no
SERVICE_USER=irisflow
UNITS="irisflow.service luigid.service irisflow-backfill@.service irisflow-worker.service"
STATE_DIRS="/var/lib/irisflow /var/lib/luigid"

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) PREFIX=${2:?}; shift ;;
        --sysconfdir) SYSCONFDIR=${2:?}; shift ;;
        --unitdir) UNITDIR=${2:?}; shift ;;
        --destdir) DESTDIR=${2:?}; shift ;;
        --venv) VENV=${2:?}; MAKE_VENV=no; shift ;;
        --wheel) WHEEL=${2:?}; shift ;;
        --no-venv) MAKE_VENV=no ;;
        --python) PYTHON=${2:?}; shift ;;
        --no-user) MAKE_USER=no ;;
        --no-systemctl) SYSTEMCTL=no ;;
        --uninstall) ACTION=uninstall ;;
        --purge) PURGE=yes ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

SRC=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$PREFIX/venv}
if [ -n "$DESTDIR" ]; then
    MAKE_USER=no
    SYSTEMCTL=no
    [ "$MAKE_VENV" = no ] || [ "$ACTION" = uninstall ] || die "--destdir needs --venv or --no-venv: a venv cannot be moved into place"
fi
for dir in "$PREFIX" "$SYSCONFDIR" "$UNITDIR" "$VENV"; do
    case $dir in /?*) ;; *) die "paths must be absolute and not /: $dir" ;; esac
done
if [ "$MAKE_USER" = yes ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or with --destdir or --no-user)"
fi
# systemctl only where systemd runs: a container or chroot has units to install but no manager.
[ -d /run/systemd/system ] || SYSTEMCTL=no

# rewrite FILE...: the paths the shipped files name, replaced with this installation's.
# Through placeholders, so that a new path containing an old one (/tmp/opt/irisflow) is not rewritten twice.
rewrite() {
    sed -i -e "s|/opt/irisflow/venv|@VENV@|g" -e "s|/opt/irisflow|@PREFIX@|g" -e "s|/etc/irisflow|@SYSCONFDIR@|g" \
        -e "s|@VENV@|$VENV|g" -e "s|@PREFIX@|$PREFIX|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" "$@"
}

# own OWNER:GROUP MODE PATH...: permissions, and the owner where the service user exists.
own() {
    owner=$1 mode=$2; shift 2
    chmod "$mode" "$@"
    if [ "$MAKE_USER" = yes ]; then chown "$owner" "$@"; fi
}

# install_config NAME: SYSCONFDIR/NAME from deploy/etc, unless it exists and differs (edited).
install_config() {
    new=$(mktemp)
    cp "$SRC/deploy/etc/$1" "$new"
    rewrite "$new"
    target=$DESTDIR$SYSCONFDIR/$1
    if [ ! -e "$target" ]; then
        mv "$new" "$target"
    elif cmp -s "$new" "$target"; then
        rm -f "$new" "$target.dist"
    else
        mv "$new" "$target.dist"
        say "kept your $SYSCONFDIR/$1; the shipped version is beside it as $1.dist"
    fi
    own "root:$SERVICE_USER" 0640 "$target"
}

create_user() {
    if ! getent passwd "$SERVICE_USER" >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/irisflow --no-create-home \
            --shell /usr/sbin/nologin --comment "irisflow batch service" "$SERVICE_USER"
        say "created user $SERVICE_USER"
    fi
}

install_app() {
    # The code lives in the venv (install_venv). With no luigi.cfg in this working directory, irisflow
    # reads the one packaged in its wheel, then SYSCONFDIR/luigi.cfg over it. The code an older
    # installer copied here goes, so that its luigi.cfg is not read instead.
    app=$DESTDIR$PREFIX/app
    mkdir -p "$app"
    for old in service tasks data luigi.cfg requirements.txt; do rm -rf "${app:?}/$old"; done
    if [ -e "$SRC/README.md" ]; then cp "$SRC/README.md" "$app/README.md"; fi
    chmod -R u=rwX,go=rX "$app"

    mkdir -p "$DESTDIR$PREFIX/bin" "$DESTDIR$PREFIX/share"
    cp "$SRC/deploy/irisflow" "$DESTDIR$PREFIX/bin/irisflow"
    rewrite "$DESTDIR$PREFIX/bin/irisflow"
    chmod 0755 "$DESTDIR$PREFIX/bin/irisflow"
    rm -rf "$DESTDIR$PREFIX/share/prometheus" "$DESTDIR$PREFIX/share/grafana" "$DESTDIR$PREFIX/share/alertmanager"
    cp -R "$SRC/deploy/prometheus" "$SRC/deploy/grafana" "$SRC/deploy/alertmanager" "$DESTDIR$PREFIX/share/"
    rewrite "$DESTDIR$PREFIX/share/grafana/provisioning/dashboards/irisflow.yml"
    chmod -R u=rwX,go=rX "$DESTDIR$PREFIX/share"
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Every dependency at the locked version and hash, then irisflow itself on top (again, even if its
    # version did not change, so that an update always lands).
    venv_pip install --require-hashes -r "$SRC/requirements.txt"
    wheel=$WHEEL built=
    if [ -z "$wheel" ]; then
        built=$(mktemp -d)
        venv_pip wheel --no-deps --wheel-dir "$built" "$SRC"
        wheel=$(echo "$built"/irisflow-*.whl)
    fi
    venv_pip install --no-deps --force-reinstall "$wheel"
    if [ -n "$built" ]; then rm -rf "$built"; fi
}

venv_pip() {
    "$VENV/bin/pip" --quiet --disable-pip-version-check "$@"
}

install_units() {
    mkdir -p "$DESTDIR$UNITDIR"
    for unit in $UNITS; do
        cp "$SRC/systemd/$unit" "$DESTDIR$UNITDIR/$unit"
        rewrite "$DESTDIR$UNITDIR/$unit"
        chmod 0644 "$DESTDIR$UNITDIR/$unit"
    done
}

install_all() {
    if [ "$MAKE_USER" = yes ]; then create_user; fi
    install_app
    if [ "$MAKE_VENV" = yes ]; then install_venv; fi
    mkdir -p "$DESTDIR$SYSCONFDIR"
    own "root:$SERVICE_USER" 0750 "$DESTDIR$SYSCONFDIR"
    install_config luigi.cfg
    install_config luigid.cfg
    install_config environment
    # systemd creates them at start too; made here so the CLI works before the daemon first ran.
    if [ "$MAKE_USER" = yes ]; then
        for dir in $STATE_DIRS; do
            mkdir -p "$dir"
            own "$SERVICE_USER:$SERVICE_USER" 0750 "$dir"
        done
    fi
    install_units
    if [ "$SYSTEMCTL" = yes ]; then
        systemctl daemon-reload
        # A running service picks up the new code; a stopped one stays stopped.
        systemctl try-restart irisflow.service luigid.service irisflow-worker.service
    fi
    say "installed irisflow in $DESTDIR$PREFIX, config in $DESTDIR$SYSCONFDIR, units in $DESTDIR$UNITDIR"
    say "start it with: systemctl enable --now irisflow.service (and luigid.service to use luigid)"
    say "on an extra host: systemctl enable --now irisflow-worker.service (README: Scale out)"
}

uninstall_all() {
    if [ "$SYSTEMCTL" = yes ]; then
        # Every unit of ours, a running backfill instance too: once its unit file and venv are gone it
        # could only be left behind, half done. Stopping waits for each to end (TimeoutStopSec=).
        systemctl disable irisflow.service luigid.service irisflow-worker.service 2>/dev/null || true
        systemctl stop irisflow.service luigid.service irisflow-worker.service 'irisflow-backfill@*.service' || true
    fi
    for unit in $UNITS; do
        rm -f "$DESTDIR$UNITDIR/$unit"
        # Local drop-ins (systemctl edit) are configuration: only --purge removes them.
        if [ "$PURGE" = yes ]; then rm -rf "$DESTDIR$UNITDIR/$unit.d"; fi
    done
    if [ "$SYSTEMCTL" = yes ]; then
        systemctl daemon-reload
        # A unit that ended failed stays listed until reset. Patterns (even '[.]') match loaded units only:
        # a plain name would load a unit that is gone, to reset it.
        systemctl reset-failed 'irisflow[.]service' 'luigid[.]service' 'irisflow-worker[.]service' \
            'irisflow-backfill@*.service' 2>/dev/null || true
    fi
    for sub in app bin share venv; do rm -rf "$DESTDIR${PREFIX:?}/$sub"; done
    rmdir "$DESTDIR$PREFIX" 2>/dev/null || true
    if [ "$PURGE" = yes ]; then
        rm -rf "$DESTDIR$SYSCONFDIR"
        if [ "$MAKE_USER" = yes ]; then
            for dir in $STATE_DIRS; do rm -rf "$dir"; done
            if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
        fi
        say "removed irisflow, its config, its data and its user"
    else
        say "removed irisflow; kept $SYSCONFDIR and the data in /var/lib/irisflow (--purge removes them)"
    fi
}

if [ "$ACTION" = install ]; then install_all; else uninstall_all; fi
