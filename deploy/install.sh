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
#
# It removes only what it installed: PREFIX/.irisflow-install-manifest lists every file and folder it
# created outside SYSCONFDIR (the units too), SYSCONFDIR/.irisflow-config-manifest those in SYSCONFDIR.
# --uninstall removes the first list's entries (--purge the second's too), folders once left empty, and
# refuses a PREFIX (or SYSCONFDIR) that exists without its manifest. Shared system folders (/, /usr,
# /usr/local, /etc, /opt, ...) are refused as PREFIX, SYSCONFDIR or UNITDIR, however they are written.
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
  --uninstall       remove what install put in place (as its manifest lists), but not config, data
                    or the user
  --purge           with --uninstall: also remove config (as its manifest lists), the units' drop-ins,
                    /var/lib/irisflow, /var/lib/luigid and the user
Shared system folders (/, /usr, /usr/local, /etc, /opt, /var, ...) are refused as --prefix, --sysconfdir
or --unitdir; paths with whitespace, control characters, quotes, %, $, ` or \ too (no unit can hold them).
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
PREFIX_MANIFEST=.irisflow-install-manifest
CONFIG_MANIFEST=.irisflow-config-manifest
# Folders other software shares: never a PREFIX, SYSCONFDIR or UNITDIR (whose contents an uninstall removes).
SHARED_DIRS="/ /bin /boot /dev /etc /home /lib /lib32 /lib64 /libx32 /media /mnt /opt /proc /root /run /sbin
/srv /sys /tmp /usr /var /usr/bin /usr/etc /usr/games /usr/include /usr/lib /usr/lib32 /usr/lib64 /usr/libexec
/usr/local /usr/sbin /usr/share /usr/src /usr/local/bin /usr/local/etc /usr/local/games /usr/local/include
/usr/local/lib /usr/local/libexec /usr/local/sbin /usr/local/share /usr/local/src /var/backups /var/cache
/var/lib /var/local /var/log /var/mail /var/opt /var/run /var/spool /var/tmp /etc/default /etc/opt
/etc/systemd /run/systemd"
# ... and these hold every unit of the system: a UNITDIR, never a PREFIX or SYSCONFDIR.
UNIT_DIRS="/etc/systemd/system /run/systemd/system /lib/systemd/system /usr/lib/systemd/system
/usr/local/lib/systemd/system"

die() { printf 'install.sh: %s\n' "$*" >&2; exit 2; }
say() { printf 'install.sh: %s\n' "$*"; }

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

# shown PATH: PATH on one line, its control characters as '?'.
shown() { printf '%s' "$1" | tr -c '[:print:]' '?'; }

# normalize PATH: an absolute PATH without //, trailing /, . and .. (as the kernel reads it, symlinks aside).
normalize() {
    normal='' ifs=$IFS
    IFS=/
    set -f
    for part in $1; do
        case $part in
            ''|.) ;;
            ..) normal=${normal%/*} ;;
            *) normal=$normal/$part ;;
        esac
    done
    set +f
    IFS=$ifs
    echo "${normal:-/}"
}

# checked_path OPTION PATH: PATH normalized, once it is absolute and writable into a systemd unit.
checked_path() {
    case $2 in
        *[[:space:]]*|*[[:cntrl:]]*|*[%\'\"\$\`\\]*)
            die "$1 $(shown "$2"): a path the units name cannot hold whitespace, control characters, quotes, %, \$, \` or \\" ;;
        /*) ;;
        *) die "$1 $(shown "$2"): not an absolute path" ;;
    esac
    normalize "$2"
}

# refuse_shared OPTION PATH [UNITDIR]: exit 2 if PATH, as written or through symlinks, is a shared system
# folder (or, unless the third argument is given, a folder of every systemd unit).
refuse_shared() {
    resolved=$(realpath -m -- "$2" 2>/dev/null) || resolved=$2
    if [ $# -lt 3 ]; then shared="$SHARED_DIRS $UNIT_DIRS"; else shared=$SHARED_DIRS; fi
    for dir in $shared; do
        if [ "$2" = "$dir" ] || [ "$resolved" = "$dir" ]; then
            if [ "$resolved" = "$2" ]; then is=$dir; else is="$resolved (through symlinks)"; fi
            die "$1 $2 is $is, a folder other software shares: give irisflow its own (e.g. /opt/irisflow)"
        fi
    done
}

# sed_escaped TEXT: TEXT as a literal sed replacement (s|...|TEXT|).
sed_escaped() { printf '%s\n' "$1" | sed -e 's/[\\&|]/\\&/g'; }

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=$(checked_path --prefix "$PREFIX")
SYSCONFDIR=$(checked_path --sysconfdir "$SYSCONFDIR")
UNITDIR=$(checked_path --unitdir "$UNITDIR")
VENV=$(checked_path --venv "${VENV:-$PREFIX/venv}")
refuse_shared --prefix "$PREFIX"
refuse_shared --sysconfdir "$SYSCONFDIR"
refuse_shared --unitdir "$UNITDIR" unitdir
if [ -n "$DESTDIR" ]; then
    MAKE_USER=no
    SYSTEMCTL=no
    [ "$MAKE_VENV" = no ] || [ "$ACTION" = uninstall ] || die "--destdir needs --venv or --no-venv: a venv cannot be moved into place"
fi
if [ "$MAKE_USER" = yes ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or with --destdir or --no-user)"
fi
# systemctl only where systemd runs: a container or chroot has units to install but no manager.
[ -d /run/systemd/system ] || SYSTEMCTL=no

# rewrite FILE...: the paths the shipped files name, replaced with this installation's.
# Through placeholders, so that a new path containing an old one (/tmp/opt/irisflow) is not rewritten twice.
# The paths were checked (checked_path) and are escaped for sed here: & and | stay literal.
rewrite() {
    sed -i -e "s|/opt/irisflow/venv|@VENV@|g" -e "s|/opt/irisflow|@PREFIX@|g" -e "s|/etc/irisflow|@SYSCONFDIR@|g" \
        -e "s|@VENV@|$(sed_escaped "$VENV")|g" -e "s|@PREFIX@|$(sed_escaped "$PREFIX")|g" \
        -e "s|@SYSCONFDIR@|$(sed_escaped "$SYSCONFDIR")|g" "$@"
}

# The manifests: one "KIND PATH" a line, PATH as installed (without DESTDIR); KIND f for a file, d for a
# folder this installer created (removed once empty), t for a tree it created whole (the venv).
INSTALLED=$(mktemp)
CONFIGURED=$(mktemp)
trap 'rm -f "$INSTALLED" "$CONFIGURED"' EXIT

# record LIST KIND PATH...: add PATH (as installed) to LIST.
record() {
    list=$1 kind=$2; shift 2
    for path in "$@"; do printf '%s %s\n' "$kind" "$path" >>"$list"; done
}

# make_dir LIST DIR [own]: DIR made under DESTDIR, and recorded in LIST if this run creates it, or always
# with `own` (PREFIX and SYSCONFDIR, never shared, and their folders: an installation older than the
# manifests is then removed whole, and a folder is only ever removed once empty).
make_dir() {
    if [ ! -d "$DESTDIR$2" ] || [ $# -gt 2 ]; then record "$1" d "$2"; fi
    mkdir -p "$DESTDIR$2"
}

# record_tree LIST DIR: every folder and file of DIR (a tree copied from the checkout) in LIST.
record_tree() {
    find "$DESTDIR$2" -type d | while IFS= read -r path; do record "$1" d "${path#"$DESTDIR"}"; done
    find "$DESTDIR$2" ! -type d | while IFS= read -r path; do record "$1" f "${path#"$DESTDIR"}"; done
}

# write_manifest LIST FILE: FILE holds what it listed before and what LIST adds (sorted, so a rerun
# that installs the same leaves it as it was).
write_manifest() {
    if [ -f "$DESTDIR$2" ]; then cat "$DESTDIR$2" >>"$1"; fi
    sort -u "$1" >"$DESTDIR$2.new"
    chmod 0644 "$DESTDIR$2.new"
    mv "$DESTDIR$2.new" "$DESTDIR$2"
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
    record "$CONFIGURED" f "$SYSCONFDIR/$1"
    if [ ! -e "$target" ]; then
        mv "$new" "$target"
    elif cmp -s "$new" "$target"; then
        rm -f "$new" "$target.dist"
    else
        mv "$new" "$target.dist"
        record "$CONFIGURED" f "$SYSCONFDIR/$1.dist"
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
    make_dir "$INSTALLED" "$PREFIX" own
    make_dir "$INSTALLED" "$PREFIX/app" own
    for old in service tasks data luigi.cfg requirements.txt; do rm -rf "${app:?}/$old"; done
    if [ -e "$SRC/README.md" ]; then
        cp "$SRC/README.md" "$app/README.md"
        record "$INSTALLED" f "$PREFIX/app/README.md"
    fi
    chmod -R u=rwX,go=rX "$app"

    make_dir "$INSTALLED" "$PREFIX/bin" own
    make_dir "$INSTALLED" "$PREFIX/share" own
    cp "$SRC/deploy/irisflow" "$DESTDIR$PREFIX/bin/irisflow"
    rewrite "$DESTDIR$PREFIX/bin/irisflow"
    chmod 0755 "$DESTDIR$PREFIX/bin/irisflow"
    record "$INSTALLED" f "$PREFIX/bin/irisflow"
    rm -rf "$DESTDIR$PREFIX/share/prometheus" "$DESTDIR$PREFIX/share/grafana" "$DESTDIR$PREFIX/share/alertmanager"
    cp -R "$SRC/deploy/prometheus" "$SRC/deploy/grafana" "$SRC/deploy/alertmanager" "$DESTDIR$PREFIX/share/"
    rewrite "$DESTDIR$PREFIX/share/grafana/provisioning/dashboards/irisflow.yml"
    chmod -R u=rwX,go=rX "$DESTDIR$PREFIX/share"
    record_tree "$INSTALLED" "$PREFIX/share/prometheus"
    record_tree "$INSTALLED" "$PREFIX/share/grafana"
    record_tree "$INSTALLED" "$PREFIX/share/alertmanager"
}

install_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    # Made here (--venv DIR is not): the installer's, as a whole.
    record "$INSTALLED" t "$VENV"
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
    make_dir "$INSTALLED" "$UNITDIR"
    for unit in $UNITS; do
        cp "$SRC/systemd/$unit" "$DESTDIR$UNITDIR/$unit"
        rewrite "$DESTDIR$UNITDIR/$unit"
        chmod 0644 "$DESTDIR$UNITDIR/$unit"
        record "$INSTALLED" f "$UNITDIR/$unit"
    done
}

install_all() {
    if [ "$MAKE_USER" = yes ]; then create_user; fi
    install_app
    if [ "$MAKE_VENV" = yes ]; then install_venv; fi
    make_dir "$CONFIGURED" "$SYSCONFDIR" own
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
    write_manifest "$CONFIGURED" "$SYSCONFDIR/$CONFIG_MANIFEST"
    write_manifest "$INSTALLED" "$PREFIX/$PREFIX_MANIFEST"
    if [ "$SYSTEMCTL" = yes ]; then
        systemctl daemon-reload
        # A running service picks up the new code; a stopped one stays stopped.
        systemctl try-restart irisflow.service luigid.service irisflow-worker.service
    fi
    say "installed irisflow in $DESTDIR$PREFIX, config in $DESTDIR$SYSCONFDIR, units in $DESTDIR$UNITDIR"
    say "start it with: systemctl enable --now irisflow.service (and luigid.service to use luigid)"
    say "on an extra host: systemctl enable --now irisflow-worker.service (README: Scale out)"
}

# manifest_of OPTION DIR NAME: DIR/NAME (under DESTDIR) if DIR holds it; nothing if DIR is absent (already
# removed); exit 2 if DIR exists without it, as a folder this installer did not make.
manifest_of() {
    if [ -f "$DESTDIR$2/$3" ]; then
        echo "$DESTDIR$2/$3"
    elif [ -e "$DESTDIR$2" ]; then
        die "$1 $2 has no $3, so install.sh did not install there; nothing removed (an installation older than the manifests: run install.sh once, then uninstall)"
    fi
}

# remove_listed MANIFEST ROOT...: remove the manifest's entries that are a ROOT or lie below one (any other
# line is not this installer's): files and trees first, then its folders deepest first if left empty. The
# manifest goes too, unless some entry is left (a folder holding files of others): then it lists those.
remove_listed() {
    manifest=$1; shift
    entries=$(mktemp)
    while IFS=' ' read -r kind path; do
        inside=no
        for root in "$@"; do
            case $path in "$root"|"$root"/*) inside=yes ;; esac
        done
        if [ "$inside" = yes ] && [ "$path" = "$(normalize "$path")" ]; then
            printf '%s %s\n' "$kind" "$path" >>"$entries"
        elif [ -n "$path" ]; then
            say "not removing $(shown "$path"): not in $*"
        fi
    done <"$manifest"
    while IFS=' ' read -r kind path; do
        case $kind in
            f) rm -f "$DESTDIR$path" ;;
            t) rm -rf "$DESTDIR$path" ;;
        esac
    done <"$entries"
    rm -f "$manifest"
    sed -n 's/^d //p' "$entries" | sort -r | while IFS= read -r path; do
        rmdir "$DESTDIR$path" 2>/dev/null || true
    done
    left=$(mktemp)
    while IFS=' ' read -r kind path; do
        if [ -e "$DESTDIR$path" ] || [ -L "$DESTDIR$path" ]; then printf '%s %s\n' "$kind" "$path" >>"$left"; fi
    done <"$entries"
    if [ -s "$left" ] && [ -d "$(dirname "$manifest")" ]; then mv "$left" "$manifest"; else rm -f "$left"; fi
    rm -f "$entries"
}

uninstall_all() {
    installed=$(manifest_of --prefix "$PREFIX" "$PREFIX_MANIFEST")
    configured=
    if [ "$PURGE" = yes ]; then configured=$(manifest_of --sysconfdir "$SYSCONFDIR" "$CONFIG_MANIFEST"); fi
    if [ "$SYSTEMCTL" = yes ]; then
        # Every unit of ours, a running backfill instance too: once its unit file and venv are gone it
        # could only be left behind, half done. Stopping waits for each to end (TimeoutStopSec=).
        systemctl disable irisflow.service luigid.service irisflow-worker.service 2>/dev/null || true
        systemctl stop irisflow.service luigid.service irisflow-worker.service 'irisflow-backfill@*.service' || true
    fi
    # The units are in the manifest; local drop-ins (systemctl edit) are configuration: only --purge
    # removes them.
    if [ -n "$installed" ]; then remove_listed "$installed" "$PREFIX" "$UNITDIR"; fi
    if [ "$PURGE" = yes ]; then
        for unit in $UNITS; do rm -rf "$DESTDIR$UNITDIR/$unit.d"; done
    fi
    if [ "$SYSTEMCTL" = yes ]; then
        systemctl daemon-reload
        # A unit that ended failed stays listed until reset. Patterns (even '[.]') match loaded units only:
        # a plain name would load a unit that is gone, to reset it.
        systemctl reset-failed 'irisflow[.]service' 'luigid[.]service' 'irisflow-worker[.]service' \
            'irisflow-backfill@*.service' 2>/dev/null || true
    fi
    if [ "$PURGE" = yes ]; then
        if [ -n "$configured" ]; then remove_listed "$configured" "$SYSCONFDIR"; fi
        if [ "$MAKE_USER" = yes ]; then
            for dir in $STATE_DIRS; do rm -rf "$dir"; done
            if getent passwd "$SERVICE_USER" >/dev/null; then userdel "$SERVICE_USER"; fi
        fi
        if [ -e "$DESTDIR$SYSCONFDIR" ]; then say "kept $SYSCONFDIR: it holds files install.sh did not put there"; fi
        say "removed irisflow, its config, its data and its user"
    else
        say "removed irisflow; kept $SYSCONFDIR and the data in /var/lib/irisflow (--purge removes them)"
    fi
    if [ -e "$DESTDIR$PREFIX" ]; then say "kept $PREFIX: it holds files install.sh did not put there"; fi
}

if [ "$ACTION" = install ]; then install_all; else uninstall_all; fi
