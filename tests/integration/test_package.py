"""The Debian package (debian/): build, lintian, install, the binaries and the unit.

Runs as root on this machine (CI runs here too), so everything it changes is undone:

* dpkg-buildpackage -us -uc -b -J2 (two jobs: the two cores) in a copy of the source tree
  (the repository stays clean);
* lintian on the .deb: an error or a warning fails;
* dpkg -i, and dpkg --purge at the end, with the instance's conf, env and state files
  removed (a battlefs package installed before the test is left alone: the test skips);
* battlefs --version, battlefs-store's usage, the files of the package;
* systemd-analyze verify on an instance of the installed battlefs@.service;
* the unit's Exec lines run by hand, with the variables of the conf file as systemd
  sets them: mount, upload, roll, ExecStop, kill -9 and the dead-mount cleanup;
* the unit under a real systemd. systemd is not PID 1 here (nor in CI), so the test
  boots one as PID 1 of new pid/mount/uts/net/cgroup namespaces with a private /run and
  a cgroup2 subtree, and nothing on its unit path but the installed unit and stub
  targets (no unit of the machine runs). There: start (hardening included: the mount must
  be visible outside the service), an upload, the secrets of the .env file, kill -9 and
  Restart=on-failure, stop, and dpkg -r / -i (prerm stops the instances). Skipped where
  namespaces or cgroup2 are not available.

SKIP_PACKAGE=1 skips the module. tools/test.sh runs it once (the build-test run).
"""

import errno
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from mountlib import REPO, gen_avro

pytestmark = [
    pytest.mark.package,
    pytest.mark.skipif(os.environ.get("SKIP_PACKAGE") == "1", reason="SKIP_PACKAGE=1"),
]

UNIT = "/lib/systemd/system/battlefs@.service"
INSTANCE = "pkgtest%d" % os.getpid()
CONF = "/etc/battlefs/%s.conf" % INSTANCE
ENV = "/etc/battlefs/%s.env" % INSTANCE
STATE = "/var/lib/battlefs/%s" % INSTANCE
COPY_IGNORE = shutil.ignore_patterns(".git", "build*", "node_modules", "__pycache__",
                                     ".pytest_cache", "obj-*", "corpus-run")


def run(cmd, timeout=120, check=True, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        pytest.fail("%s: exit %d\n%s" % (" ".join(cmd), r.returncode, r.stdout[-4000:]),
                    pytrace=False)
    return r


def meson_version():
    with open(os.path.join(REPO, "meson.build")) as f:
        return re.search(r"version\s*:\s*'([^']+)'", f.read()).group(1)


def dpkg_status(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Status}", pkg], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def dpkg(*args, ns=None):
    """dpkg (in the namespaces of Sandbox ns), waiting up to a minute for a lock that
    another dpkg or apt holds."""
    pre = ["nsenter", "-t", str(ns.pid1), "-m", "-p", "-u", "-n"] if ns else []
    for _ in range(60):
        r = run(pre + ["dpkg"] + list(args), check=False)
        if r.returncode == 0 or "lock" not in r.stdout:
            break
        time.sleep(1)
    if r.returncode != 0:
        pytest.fail("dpkg %s: exit %d\n%s" % (" ".join(args), r.returncode, r.stdout),
                    pytrace=False)


def rm_empty_dirs(*paths):
    for p in paths:
        try:
            os.rmdir(p)
        except OSError:
            pass


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """Build the package in a copy of the tree, lintian it, install it; purge at the end."""
    if os.geteuid() != 0:
        pytest.skip("needs root (dpkg -i)")
    for tool in ("dpkg-buildpackage", "dh", "lintian", "systemd-analyze"):
        if not shutil.which(tool):
            pytest.fail("%s is missing: bash tools/install-deps.sh --test installs it" % tool,
                        pytrace=False)
    if dpkg_status("battlefs"):
        pytest.skip("a battlefs package is installed on this machine (%s): not replacing it"
                    % dpkg_status("battlefs"))
    base = tmp_path_factory.mktemp("pkg")
    src = base / "battlefs"
    shutil.copytree(REPO, src, ignore=COPY_IGNORE, symlinks=True)
    t0 = time.monotonic()
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b", "-J2"], cwd=src, timeout=600, check=False)
    if r.returncode != 0:
        pytest.fail("dpkg-buildpackage failed:\n" + r.stdout[-6000:], pytrace=False)
    build_s = time.monotonic() - t0
    version = meson_version()
    debs = sorted(p.name for p in base.glob("battlefs_*.deb"))
    assert debs == ["battlefs_%s_%s.deb" % (version, run(
        ["dpkg", "--print-architecture"]).stdout.strip())], debs
    deb = str(base / debs[0])
    lint = run(["lintian", "--fail-on", "error,warning", "--no-tag-display-limit", deb],
               check=False)
    tags = [ln for ln in lint.stdout.splitlines() if re.match(r"^[EWIPXO]: ", ln)]
    assert lint.returncode == 0 and not [t for t in tags if t[0] in "EW"], lint.stdout
    had = {p: os.path.exists(p) for p in ("/etc/battlefs", "/var/lib/battlefs")}
    dpkg("-i", deb)
    try:
        yield {"deb": deb, "version": version, "build_seconds": build_s}
    finally:
        for p in (CONF, ENV):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(STATE, ignore_errors=True)
        dpkg("--purge", "battlefs")
        for p, existed in had.items():
            if not existed:
                rm_empty_dirs(p)
        assert not dpkg_status("battlefs")


def test_package_contents(package):
    v = package["version"]
    with open(os.path.join(REPO, "debian", "changelog")) as f:
        assert f.readline().startswith("battlefs (%s) " % v), "debian/changelog != meson.build"
    fields = run(["dpkg-deb", "-f", package["deb"], "Version", "Depends"]).stdout
    assert "Version: %s\n" % v in fields
    assert re.search(r"Depends:.*\bfuse3\b", fields) and "libfuse3-3" in fields, fields
    files = set(run(["dpkg", "-L", "battlefs"]).stdout.split())
    for f in ("/usr/bin/battlefs", "/usr/bin/battlefs-store", UNIT,
              "/usr/share/man/man1/battlefs.1.gz", "/usr/share/man/man1/battlefs-store.1.gz",
              "/etc/battlefs/example.conf", "/usr/share/doc/battlefs/copyright",
              "/usr/share/doc/battlefs/examples/example.env"):
        assert f in files, f
    conffiles = run(["dpkg-query", "-W", "-f", "${Conffiles}", "battlefs"]).stdout
    assert "/etc/battlefs/example.conf" in conffiles

    r = run(["/usr/bin/battlefs", "--version"])
    assert r.stdout.startswith("battlefs version %s\n" % v), r.stdout
    r = run(["/usr/bin/battlefs-store"], check=False)
    assert r.returncode == 2 and r.stdout.startswith("usage: battlefs-store"), r.stdout
    r = run(["/usr/bin/battlefs-store", "-h"])
    assert "list [--start-after KEY] [--max-keys N] [PREFIX]" in r.stdout
    # the man pages render without warnings
    for page in ("battlefs", "battlefs-store"):
        r = run(["man", "--warnings", "-l", "/usr/share/man/man1/%s.1.gz" % page],
                env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        assert "warning" not in r.stdout.lower() and page.upper() in r.stdout


def write_conf(tmp_path, **extra):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    mnt = tmp_path / "mnt"
    lines = ["# test_package", "STORE=file://%s" % store, "MOUNTPOINT=%s" % mnt,
             "OPTIONS=roll_interval=1000000"] + ["%s=%s" % kv for kv in extra.items()]
    with open(CONF, "w") as f:
        f.write("\n".join(lines) + "\n")
    return str(mnt), str(store)


def test_unit_verify(package, tmp_path):
    write_conf(tmp_path)
    r = run(["systemd-analyze", "verify", "battlefs@%s.service" % INSTANCE], check=False)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stdout
    # verify reads the installed file (a broken copy is reported, so the check has teeth)
    bad = tmp_path / "battlefs@.service"
    with open(UNIT) as f:
        bad.write_text(f.read().replace("/usr/bin/battlefs ", "/usr/bin/battlefs-none "))
    r = run(["systemd-analyze", "verify", str(tmp_path / ("battlefs@%s.service" % INSTANCE))],
            check=False)
    assert r.returncode != 0 and "battlefs-none" in r.stdout, r.stdout


# ------------------------------------------------ the unit's Exec lines, by hand


def parse_unit(path):
    """{key: [values]} of the [Service] section (continuation lines joined)."""
    out, section, cur = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if cur:
                line, cur = cur + " " + line.strip(), ""
            if line.endswith("\\"):
                cur = line[:-1]
                continue
            s = line.strip()
            if not s or s[0] in "#;":
                continue
            if s.startswith("["):
                section = s
                continue
            if section == "[Service]":
                k, _, v = s.partition("=")
                out.setdefault(k, []).append(v)
    return out


def specifiers(s):
    return s.replace("%i", INSTANCE).replace("%S", "/var/lib").replace("%%", "%")


def unit_env(svc):
    """The environment systemd gives the unit's commands: Environment=, then the files."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    for v in svc.get("Environment", []):
        for a in shlex.split(specifiers(v)):
            k, _, val = a.partition("=")
            env[k] = val
    for v in svc.get("EnvironmentFile", []):
        optional = v.startswith("-")
        path = specifiers(v.lstrip("-"))
        if not os.path.exists(path):
            assert optional, path
            continue
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line and line[0] not in "#;":
                    k, _, val = line.partition("=")
                    env[k.strip()] = " ".join(shlex.split(val)) if val.strip() else ""
    return env


def exec_argv(line, env):
    """systemd's command line: prefixes off, $VAR split into words, ${VAR} one word, $$ -> $."""
    line = specifiers(line).lstrip("-@+!:")
    argv = []
    for w in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        w = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w)
        argv.append(w.replace("$$", "$"))
    return argv


def is_dead_mount(path):
    try:
        os.stat(path)
        return False
    except OSError as e:
        return e.errno == errno.ENOTCONN


def records(data):
    return gen_avro.read_ocf(data)[1]


def upload(mnt, name="u1"):
    data = gen_avro.Generator(seed=15).upload("battle", 7).data
    d = os.path.join(mnt, "incoming", "battle", "2025-12-18")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name + ".avro"), "wb") as f:
        f.write(data)
    return data


def test_unit_commands_by_hand(package, tmp_path):
    """ExecStartPre/ExecStart/ExecStartPost/ExecStop/ExecStopPost as the unit has them."""
    mnt, store = write_conf(tmp_path)
    svc = parse_unit(UNIT)
    env = unit_env(svc)
    assert env["MOUNTPOINT"] == mnt and env["STORE"] == "file://" + store
    cmd = {k: exec_argv(svc[k][0], env) for k in
           ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecStop", "ExecStopPost")}
    assert cmd["ExecStart"] == ["/usr/bin/battlefs", "file://" + store, mnt, "-f",
                                "-o", "state=" + STATE, "-o", "roll_interval=1000000"]
    log = open(tmp_path / "battlefs.log", "w")
    procs = []

    def start():
        run(cmd["ExecStartPre"], env=env, timeout=10)
        p = subprocess.Popen(cmd["ExecStart"], env=env, stdout=log, stderr=log)
        procs.append(p)
        run(cmd["ExecStartPost"], env=env, timeout=15)  # returns once mounted
        assert os.path.ismount(mnt)
        return p

    try:
        p = start()
        data = upload(mnt)
        with open(os.path.join(mnt, ".battlefs", "roll"), "w") as f:
            f.write("\n")
        with open(os.path.join(mnt, "battle", "2025-12-18", "u1.avro"), "rb") as f:
            assert records(f.read()) == records(data)
        assert any(n.endswith(".avro") for _, _, ns in os.walk(store) for n in ns)
        run(cmd["ExecStop"], env=env, timeout=10)  # fusermount3 -u: the daemon exits
        assert p.wait(timeout=30) == 0 and not os.path.ismount(mnt)
        run(cmd["ExecStopPost"], env=env, timeout=10)  # nothing to do

        # kill -9: a dead mount, which ExecStopPost detaches
        p = start()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert is_dead_mount(mnt)
        run(cmd["ExecStopPost"], env=env, timeout=10)
        assert not is_dead_mount(mnt) and not os.path.ismount(mnt)

        # a dead mount left by anything: ExecStartPre detaches it; the data is all there
        p = start()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        assert is_dead_mount(mnt)
        p = start()
        with open(os.path.join(mnt, "battle", "2025-12-18", "u1.avro"), "rb") as f:
            assert records(f.read()) == records(data)
        p.send_signal(signal.SIGTERM)  # systemd's stop signal: an orderly stop
        assert p.wait(timeout=30) == 0 and not os.path.ismount(mnt)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.path.ismount(mnt) or is_dead_mount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt])
        log.close()
        shutil.rmtree(STATE, ignore_errors=True)
    text = (tmp_path / "battlefs.log").read_text()
    assert " ERROR: " not in text, text


# ------------------------------------------------ the unit under a real systemd

BOOT = r"""#!/bin/sh
# PID 1 of new pid/mount/uts/net/cgroup namespaces: private /run and cgroup2, then systemd.
set -e
mount --make-rprivate /
# Copies of other FUSE mounts would keep their connections open: drop them (here only).
for m in $(awk '$0 ~ / - fuse/ {print $5}' /proc/self/mountinfo); do umount -l "$m" || true; done
# Not a word to the machine's console: systemd, not finding a terminal there, logs nothing
# (its services get /dev/null; systemctl status shows how each command of the unit ended).
mount --bind /dev/null /dev/console
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
exec env container=battlefs-test SYSTEMD_UNIT_PATH="$1" /lib/systemd/systemd --system \
  --unit=battlefs-test.target --log-target=console --show-status=no
"""

STUB = "[Unit]\nDescription=%s (test stub)\nDefaultDependencies=no\n"


def cgroup2_root():
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            if post.split()[0] == "cgroup2":
                return pre.split()[4]
    return None


class Sandbox:
    """A systemd as PID 1 of its own namespaces; sh() runs a command in them."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.cg = None
        self.proc = None
        self.pid1 = None

    def boot(self):
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                pytest.skip("no %s" % tool)
        root = cgroup2_root()
        if not root:
            pytest.skip("no cgroup2 hierarchy mounted")
        self.cg = os.path.join(root, "battlefs-%s" % INSTANCE)
        try:
            os.mkdir(self.cg)
        except OSError as e:
            self.cg = None
            pytest.skip("cannot make a cgroup2 group: %s" % e)
        units = self.tmp / "units"
        units.mkdir()
        shutil.copy(UNIT, units)
        for t in ("sysinit.target", "network.target", "network-online.target",
                  "multi-user.target", "shutdown.target", "battlefs-test.target"):
            (units / t).write_text(STUB % t)
        boot = self.tmp / "boot.sh"
        boot.write_text(BOOT)
        self.log_path = self.tmp / "systemd.log"
        self.proc = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec unshare --pid --fork --mount '
             '--uts --net --cgroup --mount-proc sh "$2" "$3"', "sh", self.cg, str(boot),
             str(units)],
            stdin=subprocess.DEVNULL, stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.skip("systemd in namespaces did not start:\n" + self.log())
            if self.pid1 is None:
                try:
                    with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                        kids = f.read().split()
                    self.pid1 = int(kids[0]) if kids else None
                except OSError:
                    pass
            if self.pid1 is not None:
                r = self.sh("systemctl", "is-system-running", check=False, timeout=5)
                if r.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.1)
        pytest.skip("systemd in namespaces did not come up:\n" + self.log())

    def log(self):
        """What the boot script said, and the units' state (no journal runs here)."""
        try:
            out = self.log_path.read_text()[-3000:]
        except OSError:
            out = ""
        if self.pid1 is not None:
            try:
                out += self.sh("systemctl", "status", "--no-pager", "--full", "battlefs@*",
                               check=False, timeout=10).stdout
            except subprocess.TimeoutExpired:
                pass
        return out

    def sh(self, *cmd, check=True, timeout=60):
        return run(["nsenter", "-t", str(self.pid1), "-m", "-p", "-u", "-n"] + list(cmd),
                   check=check, timeout=timeout)

    def read(self, path):
        return subprocess.run(["nsenter", "-t", str(self.pid1), "-m", "cat", path],
                              stdout=subprocess.PIPE, check=True, timeout=30).stdout

    def show(self, unit, *props):
        out = self.sh("systemctl", "show", unit, *["-p" + p for p in props]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def mounts(self):
        """The mount points the manager (so any process outside the service) sees."""
        with open("/proc/%d/mountinfo" % self.pid1) as f:
            return [line.split()[4] for line in f]

    def close(self):
        if self.pid1 is not None:
            try:
                os.kill(self.pid1, signal.SIGKILL)  # ends every process of the namespace
            except ProcessLookupError:
                pass
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.cg:
            for _ in range(50):
                dirs = [d for d, _, _ in os.walk(self.cg, topdown=False)]
                for d in dirs:
                    rm_empty_dirs(d)
                if not os.path.exists(self.cg):
                    break
                time.sleep(0.1)


def test_unit_under_systemd(package, tmp_path):
    mnt, store = write_conf(tmp_path)
    with open(os.open(ENV, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write("AWS_ACCESS_KEY_ID=test-key-id\nBATTLEFS_PKGTEST_SECRET=s3cret\n")
    unit = "battlefs@%s.service" % INSTANCE
    sb = Sandbox(tmp_path)
    try:
        sb.boot()
        # returns once mounted (ExecStartPost): in a second; 20 s means it never will
        try:
            r = sb.sh("systemctl", "start", unit, check=False, timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("systemctl start: no mount after 20 s (in a namespace of its own?)\n"
                        + sb.log(), pytrace=False)
        assert r.returncode == 0, r.stdout + sb.log()
        st = sb.show(unit, "ActiveState", "MainPID")
        assert st["ActiveState"] == "active", st
        assert mnt in sb.mounts(), "the mount is not visible outside the service"
        pid = st["MainPID"]
        status = sb.sh("cat", "/proc/%s/status" % pid).stdout
        assert re.search(r"^NoNewPrivs:\s+1$", status, re.M)
        assert re.search(r"^Seccomp:\s+2$", status, re.M)
        assert re.search(r"^CapBnd:\s+0*200000$", status, re.M)  # CAP_SYS_ADMIN only
        environ = sb.sh("cat", "/proc/%s/environ" % pid).stdout.split("\0")
        assert "BATTLEFS_PKGTEST_SECRET=s3cret" in environ  # from the .env file
        assert "MOUNTPOINT=%s" % mnt in environ
        assert oct(os.stat(STATE).st_mode & 0o777) == "0o700"  # StateDirectory=

        data = gen_avro.Generator(seed=15).upload("battle", 7).data
        (tmp_path / "u1.avro").write_bytes(data)
        sb.sh("sh", "-c", 'mkdir -p "$1/incoming/battle/2025-12-18" && '
              'cp "$2" "$1/incoming/battle/2025-12-18/u1.avro"', "sh", mnt,
              str(tmp_path / "u1.avro"))
        assert records(sb.read(mnt + "/battle/2025-12-18/u1.avro")) == records(data)

        # kill -9: ExecStopPost detaches the dead mount, Restart=on-failure mounts again
        sb.sh("kill", "-9", pid)
        deadline = time.monotonic() + 30
        waited = False
        while time.monotonic() < deadline:
            st = sb.show(unit, "ActiveState", "SubState", "NRestarts", "MainPID")
            if st["SubState"] == "auto-restart":  # ExecStopPost ran; RestartSec= runs
                waited = True
                assert mnt not in sb.mounts(), "the dead mount is still there"
            if st["NRestarts"] == "1" and st["ActiveState"] == "active":
                break
            time.sleep(0.2)
        assert waited, "never saw the unit waiting to restart"
        assert st["NRestarts"] == "1" and st["ActiveState"] == "active", st
        assert st["MainPID"] != pid and mnt in sb.mounts()
        assert records(sb.read(mnt + "/battle/2025-12-18/u1.avro")) == records(data)

        # stop: unmounted, a clean result
        r = sb.sh("systemctl", "stop", unit, check=False)
        st = sb.show(unit, "ActiveState", "Result")
        assert r.returncode == 0 and st == {"ActiveState": "inactive", "Result": "success"}, st
        assert mnt not in sb.mounts()

        # the maintainer scripts, where systemd runs: removal stops every instance
        # (prerm), installing reloads the units (postinst); the package is back after
        sb.sh("systemctl", "start", unit, timeout=20)
        assert mnt in sb.mounts()
        if os.path.exists("/usr/sbin/policy-rc.d"):
            # A container image's "exit 101" (no service actions) would make the prerm's
            # deb-systemd-invoke do nothing, rightly: allow them in the sandbox only.
            allow = tmp_path / "policy-rc.d"
            allow.write_text("#!/bin/sh\nexit 0\n")
            allow.chmod(0o755)
            sb.sh("mount", "--bind", str(allow), "/usr/sbin/policy-rc.d")
        dpkg("-r", "battlefs", ns=sb)
        assert sb.show(unit, "ActiveState")["ActiveState"] == "inactive"
        assert mnt not in sb.mounts()
        dpkg("-i", package["deb"], ns=sb)
        assert dpkg_status("battlefs") == "install ok installed"
    except BaseException:
        print(sb.log())  # pytest shows it with the failure
        raise
    finally:
        sb.close()
