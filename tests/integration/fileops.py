"""File operations shared by the tests and their writer processes (writer_proc.py), which import
this instead of mountlib: mountlib imports pytest, about 0.2 s of CPU per process, and the
concurrency tests start 64 writers."""

import os


def write_file(path, data, chunks=None, mode=0o644, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC):
    """0, or the errno of the first failing step of open/write.../close (close always runs)."""
    try:
        fd = os.open(path, flags, mode)
    except OSError as e:
        return e.errno
    err = 0
    try:
        pos = 0
        i = 0
        while pos < len(data):
            n = chunks[i % len(chunks)] if chunks else len(data) - pos
            i += 1
            w = os.write(fd, data[pos:pos + n])
            assert w > 0
            pos += w
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        if not err:
            err = e.errno
    return err
