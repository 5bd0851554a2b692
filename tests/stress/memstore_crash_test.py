#!/usr/bin/python3
"""Crash driver for the memory store (reliability A1, A3).

Runs memstore_stress against one store again and again and kills it with SIGKILL: at a random
moment (blackbox), or by the writer itself at random kill points (whitebox, every other run).
Each run first verifies the store against the expected-state oracle left by the runs before
(every acknowledged commit present and byte-identical, no unexpected document, no partial
document, fsck clean) and prints READY; a run that exits before READY fails the test.

  Short run (default suite):  ctest -L memstore
  Long run:  /usr/bin/python3 tests/stress/memstore_crash_test.py \
                 --binary build-mem/tests/stress/memstore_stress --kills 300
"""

import argparse
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def wait_ready(proc, timeout):
    """Reads the writer's stdout until READY; returns (ready, output)."""
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            out += chunk
            if b"READY\n" in out:
                return True, out.decode(errors="replace")
        elif proc.poll() is not None:
            break
    return False, out.decode(errors="replace")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True, help="path of memstore_stress")
    parser.add_argument("--kills", type=int, default=24, help="number of kill/reopen cycles")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--min_delay", type=float, default=0.02, help="seconds before a kill")
    parser.add_argument("--max_delay", type=float, default=0.5, help="seconds before a kill")
    parser.add_argument("--dir", default=None, help="work directory (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    work = args.dir or tempfile.mkdtemp(prefix="qllm-memstore-crash-")
    db = os.path.join(work, "db")
    oracle = os.path.join(work, "oracle.txt")
    print(f"crash test: seed {seed}, {args.kills} kills, work dir {work}", flush=True)
    started = time.monotonic()
    ok = False
    try:
        for i in range(args.kills):
            cmd = [args.binary, f"--db={db}", f"--oracle={oracle}", "--mode=run",
                   f"--seed={rng.getrandbits(32)}"]
            whitebox = i % 2 == 1
            # Both document write modes, switched between runs on the same store.
            cmd.append(f"--blocks_in_wal={'true' if rng.random() < 0.5 else 'false'}")
            if whitebox:
                cmd.append(f"--kill_odds={rng.choice([20, 50, 200])}")
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            ready, out = wait_ready(proc, timeout=120)
            if not ready:
                proc.kill()
                proc.wait()
                print(f"run {i}: writer failed before READY (rc {proc.returncode}):\n{out}")
                return 1
            time.sleep(rng.uniform(args.min_delay, args.max_delay))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            rc = proc.wait()
            rest = proc.stdout.read().decode(errors="replace")
            if rc not in (-signal.SIGKILL, 0):
                print(f"run {i}: writer exited with {rc}:\n{out}{rest}")
                return 1
            kind = "whitebox" if whitebox else "blackbox"
            print(f"run {i}: {out.strip().splitlines()[0]}; killed ({kind})", flush=True)
        final = subprocess.run([args.binary, f"--db={db}", f"--oracle={oracle}", "--mode=verify"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        text = final.stdout.decode(errors="replace")
        if final.returncode != 0:
            print(f"final verify failed (rc {final.returncode}):\n{text}")
            return 1
        print(f"final: {text.strip().splitlines()[0]}")
        print(f"crash test passed: {args.kills} kills in {time.monotonic() - started:.1f} s")
        ok = True
        return 0
    finally:
        if ok and not args.keep and args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
        elif not ok:
            print(f"work dir kept for inspection: {work}")


if __name__ == "__main__":
    sys.exit(main())
