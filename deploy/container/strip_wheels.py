"""Strip the shared objects inside wheels (`strip --strip-unneeded`, as Debian strips its
packages), in place: usage `strip_wheels.py WHEEL_DIR`. Part of `make image`.

Some binary wheels ship their extension modules with debug information (uvloop's is
13 MB, 2 MB stripped): about 30 MB of the image. Each changed wheel is rewritten with the
same entries and dates, and its RECORD gets the new hashes and sizes. Without `strip` on
the build host this does nothing.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def strip_wheel(wheel: Path, strip: str) -> int:
    """Bytes saved in `wheel`'s shared objects (0: the wheel is left as it was)."""
    with zipfile.ZipFile(wheel) as source:
        entries = [(info, source.read(info)) for info in source.infolist()]
    changed: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for info, data in entries:
            name = info.filename
            if not (name.endswith(".so") or ".so." in name) or not data.startswith(b"\x7fELF"):
                continue
            path = Path(scratch) / "object.so"
            path.write_bytes(data)
            subprocess.run([strip, "--strip-unneeded", str(path)], check=True)  # noqa: S603
            stripped = path.read_bytes()
            if len(stripped) < len(data):
                changed[name] = stripped
    if not changed:
        return 0
    record_name = next(info.filename for info, _ in entries
                       if info.filename.endswith(".dist-info/RECORD"))
    saved = 0
    with io.BytesIO() as buffer:
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as target:
            for info, data in entries:
                if info.filename in changed:
                    saved += len(data) - len(changed[info.filename])
                    data = changed[info.filename]
                elif info.filename == record_name:
                    data = rewrite_record(data, changed)
                target.writestr(info, data)
        wheel.write_bytes(buffer.getvalue())
    return saved


def rewrite_record(record: bytes, changed: dict[str, bytes]) -> bytes:
    rows = list(csv.reader(io.StringIO(record.decode())))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        if row and row[0] in changed:
            data = changed[row[0]]
            row = [row[0], record_hash(data), str(len(data))]
        writer.writerow(row)
    return out.getvalue().encode()


def main() -> None:
    strip = shutil.which("strip")
    if strip is None:
        print("strip not found (binutils): the wheels' shared objects stay as they are",
              file=sys.stderr)
        return
    saved = sum(strip_wheel(wheel, strip) for wheel in sorted(Path(sys.argv[1]).glob("*.whl")))
    print(f"stripped shared objects: {saved / 1e6:.0f} MB less", file=sys.stderr)


if __name__ == "__main__":
    main()
