"""mountlib: battlefs mounts for the integration tests (used through conftest.py's fixtures).

    def test_x(mount):                      # a fresh mount (roll_interval=1000000)
        mount.upload("battle/2025-12-18/u1.avro", data)        # -> 0 or an errno
        mount.records("battle", "2025-12-18", "u1")            # python3-avro
        mount.avrocat("battle", "2025-12-18", "u1")            # avrocat, as Avro JSON
        mount.stats()                                          # .battlefs/stats as a dict
        mount.expect_log(r"rejected .*u2.avro")                # a WARN/ERROR line that is fine
        mount.remount(); mount.kill9_and_remount()
        mount.pause(); mount.resume()                          # SIGSTOP / SIGCONT the daemon

    def test_y(mount_factory):              # mounts with options
        m = mount_factory(codec="snappy", max_upload="64K")
        m = mount_factory(start=False, store_timeout="0")
        rc, err = m.start_refused()                            # a mount that must not come up

Environment: BATTLEFS_BUILD (meson build dir, default /work/main/build),
BATTLEFS_TEST_TIMEOUT (seconds per test before the daemon is killed, default 180).

Every mount gets its own tmp mountpoint and state dir; its stderr goes to <tmp>/battlefs.log.
At teardown each mount is unmounted (fusermount3 -u, else umount -l) and must exit with status 0
(unless the test killed it); the test fails if the log has an ERROR or WARN line the test did
not declare with expect_log, a sanitizer report, or if an expected line never appeared.
"""

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import gen_avro  # noqa: E402
from fileops import write_file  # noqa: E402,F401  (re-exported to the tests)

BUILD = os.environ.get("BATTLEFS_BUILD", os.path.join(REPO, "build"))


def build_option(name):
    """The value of meson option `name` in BUILD, or None (no such build or option)."""
    try:
        with open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")) as f:
            opts = json.load(f)
    except OSError:
        return None
    return next((o["value"] for o in opts if o["name"] == name), None)


# BUILD honours -o fault= (configured with -Dfault_injection=true)
needs_faults = pytest.mark.skipif(build_option("fault_injection") is not True,
                                  reason="needs a build with -Dfault_injection=true")
BINARY = os.path.join(BUILD, "battlefs")
TEST_TIMEOUT = float(os.environ.get("BATTLEFS_TEST_TIMEOUT", "180"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 60.0  # sanitizer builds exit slowly
DEFAULT_OPTS = {"roll_interval": "1000000"}

LOG_RE = re.compile(r"^battlefs: (\S+) (ERROR|WARN|INFO|DEBUG): (.*)$")
# Lines that are always a failure, whatever the test expects.
FATAL_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|ThreadSanitizer|"
                      r"runtime error:|^SUMMARY: |Assertion .* failed|^fuse: ")


def _run(cmd, timeout=30, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, **kw)


def _is_mounted(path):
    """From /proc/self/mountinfo (no syscall into the FUSE daemon, so it cannot hang)."""
    path = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = line.split()[4].replace("\\040", " ")
                if mp == path:
                    return True
    except OSError:
        pass
    return False


def _force_unmount(path):
    if not _is_mounted(path):
        return
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        try:
            _run(cmd, timeout=15)
        except subprocess.TimeoutExpired:
            pass
        if not _is_mounted(path):
            return


class Mount:
    """One battlefs daemon on its own mountpoint and state directory."""

    def __init__(self, root, options=None, store=None, binary=None):
        self.root = root
        self.mnt = os.path.join(root, "mnt")
        self.state = os.path.join(root, "state")
        self.log_path = os.path.join(root, "battlefs.log")
        os.makedirs(self.mnt, exist_ok=True)
        self.options = dict(DEFAULT_OPTS)
        self.options.update(options or {})
        self.store = store
        self.binary = binary or BINARY
        self.proc = None
        self.expected = []     # [compiled regex, required, seen count]
        self.problems = []     # things that fail the test at teardown
        self.generation = 0    # daemon starts
        self.killed = False    # the current daemon was killed on purpose
        self.paused = False    # the current daemon is stopped with SIGSTOP (pause)
        self._logf = None

    # ---------------------------------------------------------------- life cycle

    def cmdline(self):
        opts = ["state=" + self.state]
        for k, v in self.options.items():
            opts.append(k if v is True else "%s=%s" % (k, v))
        cmd = [self.binary]
        if self.store:
            cmd.append(self.store)
        return cmd + [self.mnt, "-f", "-o", ",".join(opts)]

    def start(self, **options):
        """Start the daemon (options update the mount's options) and wait until it serves."""
        assert self.proc is None, "already running"
        if not os.path.exists(self.binary):
            pytest.fail("no battlefs binary at %s (set BATTLEFS_BUILD)" % self.binary)
        self.options.update(options)
        self.generation += 1
        self.killed = False
        self._logf = open(self.log_path, "ab")
        self._logf.write(b"=== start %d: %s\n" % (self.generation, " ".join(self.cmdline()).encode()))
        self._logf.flush()
        self.proc = subprocess.Popen(self.cmdline(), stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=self._logf, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                self.proc = None
                self._logf.close()
                pytest.fail("battlefs exited with %d at start:\n%s" % (rc, self.log_tail()))
            if _is_mounted(self.mnt):
                try:
                    r = _run(["cat", os.path.join(self.mnt, ".battlefs", "stats")], timeout=10)
                    if r.returncode == 0 and r.stdout.strip().startswith(b"{"):
                        return self
                except subprocess.TimeoutExpired:
                    pass
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail("battlefs did not come up in %ds:\n%s" % (START_TIMEOUT, self.log_tail()))
            time.sleep(0.02)

    def stop(self):
        """Unmount and wait for the daemon to exit. Records a problem (fails the test) when
        the unmount does not work or the daemon exits with a non-zero status."""
        self.resume()
        if self.proc is None:
            _force_unmount(self.mnt)
            return
        ok = False
        for attempt in range(50):
            try:
                r = _run(["fusermount3", "-u", self.mnt], timeout=15)
                if r.returncode == 0 or not _is_mounted(self.mnt):
                    ok = True
                    break
                err = r.stderr.decode(errors="replace")
            except subprocess.TimeoutExpired:
                err = "fusermount3 -u timed out"
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)  # EBUSY: a file still open (a child process finishing)
        if not ok:
            self.problems.append("fusermount3 -u %s failed: %s" % (self.mnt, err))
            _force_unmount(self.mnt)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.problems.append("battlefs did not exit %ds after unmount" % STOP_TIMEOUT)
            os.killpg(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait(timeout=30)
        if rc != 0 and not self.killed:
            self.problems.append("battlefs exited with status %d after unmount" % rc)
        self.proc = None
        self._logf.close()
        _force_unmount(self.mnt)

    def kill9(self):
        """kill -9 the daemon and clear the dead mount."""
        if self.proc is None:
            return
        self.killed = True
        self.resume()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        self._logf.close()
        _force_unmount(self.mnt)

    def remount(self, **options):
        self.stop()
        return self.start(**options)

    def kill9_and_remount(self, **options):
        self.kill9()
        return self.start(**options)

    def pause(self):
        """SIGSTOP the daemon (its process group): it answers nothing until resume(). Do not
        touch the mountpoint meanwhile (the access would hang). stop() and kill9() resume it."""
        assert self.proc is not None and not self.paused
        os.killpg(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        """SIGCONT a paused daemon (nothing when it is not paused)."""
        if self.paused and self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.paused = False

    def start_refused(self, timeout=30):
        """Run the mount command (with the mount's options) expecting it to refuse: return
        (exit status, stderr text). Fails the test, after killing it and clearing the mount,
        if the daemon is still running after timeout seconds. The mount's log is not used."""
        assert self.proc is None, "already running"
        p = subprocess.Popen(self.cmdline(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate(timeout=30)
            _force_unmount(self.mnt)
            pytest.fail("the mount was not refused (still running after %ss):\n%s"
                        % (timeout, err.decode(errors="replace")[-2000:]))
        mounted = _is_mounted(self.mnt)
        _force_unmount(self.mnt)
        assert not mounted, "the refused mount left %s mounted" % self.mnt
        return p.returncode, err.decode(errors="replace")

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def spool_files(self, timeout=10):
        """What the spool still holds: names in <state>/spool and the daemon's open spool files
        (anonymous, O_TMPFILE). Waits up to timeout for them to go, since the kernel releases
        a closed file asynchronously."""
        spool = os.path.realpath(os.path.join(self.state, "spool"))
        deadline = time.monotonic() + timeout
        while True:
            held = sorted(os.listdir(spool))
            if self.running:
                fds = "/proc/%d/fd" % self.proc.pid
                for fd in os.listdir(fds):
                    try:
                        target = os.readlink(os.path.join(fds, fd))
                    except OSError:
                        continue  # closed meanwhile
                    if target.startswith(spool + "/"):
                        held.append("fd %s -> %s" % (fd, target))
            if not held or time.monotonic() > deadline:
                return held
            time.sleep(0.02)

    # ---------------------------------------------------------------- log

    def expect_log(self, regex, required=True):
        """Declare that a WARN/ERROR line matching regex (re.search on the message) is fine.
        required: the test fails if no line matched by teardown."""
        self.expected.append([re.compile(regex), required, 0])

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", errors="replace")

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_text().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def log_lines(self, level=None):
        """[(time, level, message)] of the battlefs lines so far."""
        out = []
        for line in self.log_text().splitlines():
            m = LOG_RE.match(line)
            if m and (level is None or m.group(2) == level):
                out.append((m.group(1), m.group(2), m.group(3)))
        return out

    def wait_log(self, regex, timeout=10):
        deadline = time.monotonic() + timeout
        rx = re.compile(regex)
        while time.monotonic() < deadline:
            for _, _, msg in self.log_lines():
                if rx.search(msg):
                    return msg
            time.sleep(0.05)
        raise AssertionError("no log line matching %r in %ss:\n%s" % (regex, timeout, self.log_tail()))

    def check_log(self):
        """Problems with the log: unexpected WARN/ERROR lines, sanitizer output, bad format."""
        problems = []
        try:
            text = self.log_text()
        except OSError:
            return problems
        for line in text.splitlines():
            if line.startswith("=== start "):
                continue
            if FATAL_RE.search(line):
                problems.append("daemon output: " + line)
                continue
            m = LOG_RE.match(line)
            if not m:
                if line.startswith("battlefs:") and re.match(r"^battlefs: \S+ [A-Z]+: ", line):
                    problems.append("bad log level: " + line)
                continue
            if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", m.group(1)):
                problems.append("bad log timestamp: " + line)
            if m.group(2) in ("ERROR", "WARN"):
                hit = False
                for e in self.expected:
                    if e[0].search(m.group(3)):
                        e[2] += 1
                        hit = True
                if not hit:
                    problems.append("unexpected log line: " + line)
        for rx, required, seen in self.expected:
            if required and not seen:
                problems.append("expected log line never appeared: %r" % rx.pattern)
        return problems

    # ---------------------------------------------------------------- paths

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def incoming(self, rel=""):
        return os.path.join(self.mnt, "incoming", rel) if rel else os.path.join(self.mnt, "incoming")

    def dataset_path(self, table, period, dataset):
        return os.path.join(self.mnt, table, period, dataset + ".avro")

    # ---------------------------------------------------------------- control files

    def stats(self):
        with open(self.path(".battlefs", "stats"), "rb") as f:
            return json.loads(f.read())

    def errors(self):
        with open(self.path(".battlefs", "errors"), "rb") as f:
            return f.read().decode("utf-8").splitlines()

    # ---------------------------------------------------------------- writing

    def upload(self, rel, data, chunks=None, mode=0o644):
        """Write data to incoming/<rel> with os.open/os.write/os.close. Returns 0 when every
        step succeeded, else the errno of the first failing step (the close errno when the
        writes succeeded). chunks: a list of write sizes, cycled."""
        return write_file(self.incoming(rel), data, chunks=chunks, mode=mode)

    def upload_ok(self, rel, data, **kw):
        e = self.upload(rel, data, **kw)
        assert e == 0, "upload of incoming/%s failed: %s\n%s" % (rel, errno.errorcode.get(e, e), self.log_tail(5))

    # ---------------------------------------------------------------- reading

    def read_bytes(self, table, period, dataset):
        with open(self.dataset_path(table, period, dataset), "rb") as f:
            return f.read()

    def records(self, table, period, dataset):
        """The dataset file's records with python3-avro (and each block's count checked)."""
        data = self.read_bytes(table, period, dataset)
        _, recs = gen_avro.read_ocf(data)
        assert gen_avro.decode_blocks(data) == recs
        return recs

    def avrocat(self, table, period, dataset):
        """The dataset file's records as printed by avrocat (Avro JSON), read on the mount."""
        return gen_avro.avrocat_records(self.dataset_path(table, period, dataset))

    def data_tree(self):
        """{relative path: bytes} of every file of the data tree (not incoming/ or .battlefs/),
        plus the directories as path/ -> None: to compare the tree before and after."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.mnt):
            rel = os.path.relpath(dirpath, self.mnt)
            if rel == ".":
                dirnames[:] = [d for d in dirnames if d not in ("incoming", ".battlefs")]
            else:
                out[rel + "/"] = None
            for fn in filenames:
                p = os.path.join(dirpath, fn)
                with open(p, "rb") as f:
                    out[os.path.relpath(p, self.mnt)] = f.read()
        return out

    def datasets(self):
        """[(table, period, dataset)] listed in the data tree."""
        out = []
        for t in sorted(os.listdir(self.mnt)):
            if t in ("incoming", ".battlefs"):
                continue
            for p in sorted(os.listdir(self.path(t))):
                for d in sorted(os.listdir(self.path(t, p))):
                    assert d.endswith(".avro"), d
                    out.append((t, p, d[:-5]))
        return out


def vm_hwm(m):
    """The daemon's peak resident set (VmHWM), in bytes."""
    with open("/proc/%d/status" % m.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


PERIOD = "2025-12-18"


def assert_uploads_interleaved(got, per_writer):
    """got (a dataset's records) is the uploads of per_writer ([[Upload]] per writer) each
    whole and contiguous, each exactly once, and each writer's uploads in its order."""
    assert len(got) == sum(len(u.records) for us in per_writer for u in us)
    pos = [0] * len(per_writer)
    i = 0
    while i < len(got):
        for t, us in enumerate(per_writer):
            if pos[t] < len(us) and got[i:i + len(us[pos[t]].records)] == us[pos[t]].records:
                i += len(us[pos[t]].records)
                pos[t] += 1
                break
        else:
            raise AssertionError("record %d is not the next upload of any writer" % i)
    assert pos == [len(us) for us in per_writer]


def errname(e):
    return errno.errorcode.get(e, str(e)) if e else "OK"


def cleanup_mounts_under(root):
    """Lazy-unmount every mount below root (leftovers of a crashed test run)."""
    root = os.path.realpath(root)
    try:
        with open("/proc/self/mountinfo") as f:
            mps = [line.split()[4].replace("\\040", " ") for line in f]
    except OSError:
        return
    for mp in mps:
        if mp.startswith(root + "/"):
            _force_unmount(mp)


class MountFactory:
    def __init__(self, tmp_root):
        self.tmp_root = tmp_root
        self.mounts = []
        self.timed_out = False
        self._timer = threading.Timer(TEST_TIMEOUT, self._watchdog)
        self._timer.daemon = True
        self._timer.start()

    def _watchdog(self):
        # A hung daemon would block the test in a syscall forever: kill it, which fails every
        # pending FUSE request (ENOTCONN) and lets the test (and teardown) go on.
        self.timed_out = True
        for m in self.mounts:
            if m.proc is not None:
                try:
                    os.killpg(m.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _force_unmount(m.mnt)

    def __call__(self, store=None, start=True, **options):
        root = tempfile.mkdtemp(prefix="m%d-" % len(self.mounts), dir=self.tmp_root)
        m = Mount(root, options=options, store=store)
        self.mounts.append(m)
        if start:
            m.start()
        return m

    def close(self):
        self._timer.cancel()
        problems = []
        if self.timed_out:
            problems.append("test timed out after %ds: daemons killed" % TEST_TIMEOUT)
        for m in self.mounts:
            try:
                m.stop()
            except Exception as e:  # keep tearing the others down
                problems.append("stop of %s: %r" % (m.mnt, e))
                _force_unmount(m.mnt)
            for p in m.problems + m.check_log():
                problems.append("%s: %s" % (m.root, p))
        return problems


