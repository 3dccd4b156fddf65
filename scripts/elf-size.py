#!/usr/bin/env python3
"""Flash and static RAM of firmware images, and the size snapshot CI keeps.

    scripts/elf-size.py ELF...                      # print "name flash ram" per image
    scripts/elf-size.py --check SNAPSHOT ELF...     # and fail if an image outgrew SNAPSHOT (+ slack)
    scripts/elf-size.py --update SNAPSHOT ELF...    # rewrite SNAPSHOT with today's sizes

flash = .vector_table + .text + .rodata, RAM = .data + .bss + .uninit (static,
without the stack; the RP2040's and the ESP32-C3's extra sections are listed
at FLASH and RAM below) — the definitions BENCHMARKS.md uses. Reads the ELF32
section headers with the standard library only, so a fresh machine needs no
binutils. SNAPSHOT lines are `image flash_bytes ram_bytes` (`#` comments).

--check allows `slack()` of layout noise: the same sources built from clones
at different paths differ by a few bytes (cargo's metadata hashes include a
path dependency's location, and the symbol names they make change the
function order and so the alignment padding; measured: 110 900 and 110 956 B
for one qemu image). Real growth — a formatting routine pulled in, a bigger
model — is kilobytes.
"""
import struct
import sys
from pathlib import Path

# Cortex-M (cortex-m-rt; .boot2: the RP2040's second-stage bootloader) and
# ESP32-C3 (esp-hal: .flash.appdesc, the bootloader's app descriptor; .trap and
# .rwtext, code the boot copies from flash into IRAM; .noinit).
FLASH = {".boot2", ".vector_table", ".text", ".rodata", ".flash.appdesc", ".trap", ".rwtext"}
RAM = {".data", ".bss", ".uninit", ".noinit"}


def slack(size, floor):
    """Growth --check tolerates: 1 % of the snapshot, at least `floor` bytes."""
    return max(floor, size // 100)


def sizes(path):
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 1 or data[5] != 1:
        sys.exit(f"{path}: not a little-endian ELF32 file")
    shoff, = struct.unpack_from("<I", data, 0x20)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<IIIIIIIIII", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_off = headers[shstrndx][4]

    def name(h):
        start = strtab_off + h[0]
        return data[start:data.index(b"\0", start)].decode()

    flash = sum(h[5] for h in headers if name(h) in FLASH)
    ram = sum(h[5] for h in headers if name(h) in RAM)
    return flash, ram


def read_snapshot(path):
    snap = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if line:
            snap[line[0]] = (int(line[1]), int(line[2]))
    return snap


def main(argv):
    mode, snapshot = None, None
    if argv and argv[0] in ("--check", "--update"):
        mode, snapshot, argv = argv[0], argv[1], argv[2:]
    if not argv:
        sys.exit(__doc__)
    now = {Path(p).name: sizes(p) for p in argv}
    for image, (flash, ram) in now.items():
        print(f"{image:<12} flash {flash:7d} B   RAM {ram:6d} B (static, without stack)")
    if mode == "--update":
        text = "# image  flash_bytes  ram_bytes — written by scripts/elf-size.py --update;\n"
        text += "# CI fails when an image outgrows these (scripts/firmware-ci.sh).\n"
        text += "".join(f"{i} {f} {r}\n" for i, (f, r) in sorted(now.items()))
        Path(snapshot).write_text(text)
        print(f"wrote {snapshot}")
    elif mode == "--check":
        snap = read_snapshot(snapshot)
        grew = []
        for image, (flash, ram) in now.items():
            if image not in snap:
                grew.append(f"{image}: not in {snapshot}")
                continue
            f0, r0 = snap[image]
            if flash > f0 + slack(f0, 512) or ram > r0 + slack(r0, 64):
                grew.append(f"{image}: flash {f0} → {flash} B ({flash - f0:+d}), RAM {r0} → {ram} B ({ram - r0:+d})")
            elif flash > f0 or ram > r0:
                print(f"note: {image} flash {flash - f0:+d} B, RAM {ram - r0:+d} B against the snapshot: "
                      "within layout noise")
            elif (flash, ram) != (f0, r0):
                print(f"note: {image} shrank (flash {flash - f0:+d} B, RAM {ram - r0:+d} B); "
                      f"tighten the snapshot with scripts/elf-size.py --update {snapshot} …")
        if grew:
            print("firmware images outgrew the size snapshot:\n  " + "\n  ".join(grew), file=sys.stderr)
            print(f"if the growth is intended, record it: scripts/elf-size.py --update {snapshot} <images>",
                  file=sys.stderr)
            return 1
        print(f"sizes within {snapshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
