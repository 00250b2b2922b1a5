#!/usr/bin/env python3
"""compare_ids.py NAME OURS.i32.bin REF.i32.bin [CORPUS]: one PASS/FAIL
line; on a mismatch, the first differing position and the ids around it."""
import struct
import sys


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    return struct.unpack("<%di" % (len(data) // 4), data)


def main():
    name, ours, ref = sys.argv[1], load(sys.argv[2]), load(sys.argv[3])
    if ours == ref:
        print("PASS %s (%d ids identical)" % (name, len(ref)))
        return 0
    i = next((k for k in range(min(len(ours), len(ref)))
              if ours[k] != ref[k]), min(len(ours), len(ref)))
    print("FAIL %s: %d vs %d ids, first difference at id %d: ours %s, "
          "reference %s" % (name, len(ours), len(ref), i,
                            list(ours[max(0, i - 3):i + 5]),
                            list(ref[max(0, i - 3):i + 5])))
    return 1


if __name__ == "__main__":
    sys.exit(main())
