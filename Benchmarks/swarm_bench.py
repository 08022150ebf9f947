#!/usr/bin/env python3
"""Swarm fan-out benchmark (issue 13): N receivers need the same new data from one writer.

usage: sudo python3 Benchmarks/swarm_bench.py --syncd BIN [--receivers 8] [--mib 256] [--rate 100mbit]
                                             [--corpus random|text] [--one-only] [--no-compression]

Each device runs in its own network namespace (sw0 is the writer, sw1..swN the receivers) on one
bridge (10.77.0.0/24, nothing leaves the machine), and each namespace's uplink is shaped with TBF
to --rate, so the writer's upload is the scarce resource, as between zones. Two runs in one go:
  one    the writer and one receiver: how long one receiver takes alone;
  swarm  the writer and N receivers.
Each run starts the daemons on empty folders, waits until every receiver has a session with the
writer, then renames --mib MiB of random data (16 files) into the writer's folder and times until
every receiver holds exactly the writer's files (sizes polled, SHA-256 checked at the end). The
writer's upload is its veth's tx_bytes (all traffic: frames, gossip, headers).

--corpus text writes application log lines instead of random bytes, and --one-only runs only the
first run: with --no-compression passed to the daemons or not, that measures wire compression on
a link slower than deflate (Benchmarks/RESULTS.md, "Wire compression on a shaped link").

Prints one JSON line: seconds and writer upload (as a multiple of the data) of each run, and the
targets' ratios: writer upload <= 2 x the data, swarm time <= 2 x one receiver's time. Needs root.
"""
import argparse, hashlib, json, os, shutil, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('--syncd', required=True)
ap.add_argument('--receivers', type=int, default=8)
ap.add_argument('--mib', type=int, default=256)
ap.add_argument('--rate', default='100mbit', help='TBF rate of each device uplink')
ap.add_argument('--workdir', default='/tmp/swarm-bench')
ap.add_argument('--timeout', type=int, default=900)
ap.add_argument('--corpus', choices=['random', 'text'], default='random')
ap.add_argument('--one-only', action='store_true')
ap.add_argument('--no-compression', action='store_true')
a = ap.parse_args()
BIN = os.path.abspath(a.syncd)
BR = 'swbr0'
PORT = 22000


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def ns(i): return 'sw%d' % i
def ip(i): return '10.77.0.%d' % (i + 1)


def teardown(n):
    for i in range(n):
        sh('ip', 'netns', 'del', ns(i), check=False)
    sh('ip', 'link', 'del', BR, check=False)


def setup(n):
    teardown(n)
    sh('ip', 'link', 'add', BR, 'type', 'bridge')
    sh('ip', 'link', 'set', BR, 'up')
    for i in range(n):
        sh('ip', 'netns', 'add', ns(i))
        sh('ip', 'link', 'add', 'swv%d' % i, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns(i))
        sh('ip', 'link', 'set', 'swv%d' % i, 'master', BR, 'up')
        sh('ip', 'netns', 'exec', ns(i), 'ip', 'addr', 'add', ip(i) + '/24', 'dev', 'eth0')
        sh('ip', 'netns', 'exec', ns(i), 'ip', 'link', 'set', 'eth0', 'up')
        sh('ip', 'netns', 'exec', ns(i), 'ip', 'link', 'set', 'lo', 'up')
        sh('ip', 'netns', 'exec', ns(i), 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf',
           'rate', a.rate, 'burst', '256kb', 'latency', '50ms')


def tx_bytes(i):
    return int(sh('ip', 'netns', 'exec', ns(i), 'cat', '/sys/class/net/eth0/statistics/tx_bytes').stdout)


def tree(d, hashed):
    out = {}
    for root, ds, fs in os.walk(d):
        ds[:] = [x for x in ds if not x.startswith('.syncd')]
        for f in fs:
            p = os.path.join(root, f)
            try:
                if hashed:
                    h = hashlib.sha256()
                    with open(p, 'rb') as fh:
                        for b in iter(lambda: fh.read(1 << 20), b''): h.update(b)
                    out[os.path.relpath(p, d)] = h.hexdigest()
                else:
                    out[os.path.relpath(p, d)] = os.path.getsize(p)
            except OSError:
                pass
    return out


def logs(seed, size):
    """`size` bytes of application log lines (timestamps, ids, paths, statuses)."""
    out, n = [], seed * 100000
    total = 0
    while total < size:
        line = ('2026-12-01T10:%02d:%02d.%03dZ INFO http request_id=%d user=u%d method=GET '
                'path=/api/v1/items/%d status=%d bytes=%d ms=%d\n' % (n // 60000 % 60, n // 1000 % 60, n % 1000,
                n * 2654435761 % 1000000007, n % 997, n % 4099, 404 if n % 17 == 0 else 200, n % 9973, n % 211)).encode()
        out.append(line); total += len(line); n += 1
    return b''.join(out)[:size]


def run(receivers):
    n = receivers + 1
    setup(n)
    base = os.path.join(a.workdir, 'r%d' % receivers)
    shutil.rmtree(base, ignore_errors=True)
    homes = [os.path.join(base, 'h%d' % i) for i in range(n)]
    dirs = [os.path.join(base, 'd%d' % i) for i in range(n)]
    for d in homes + dirs: os.makedirs(d)
    procs = []
    try:
        for i in range(n):
            args = ['ip', 'netns', 'exec', ns(i), BIN, 'daemon', '--home', homes[i], '--listen', '%s:%d' % (ip(i), PORT)]
            if i: args += ['--join', '%s:%d' % (ip(0), PORT)]
            if a.no_compression: args += ['--no-compression']
            procs.append(subprocess.Popen(args, stdout=open(homes[i] + '/out.log', 'w'), stderr=subprocess.STDOUT))
        for i in range(n):
            for _ in range(600):
                if subprocess.run([BIN, 'status', '--home', homes[i]], capture_output=True).returncode == 0: break
                time.sleep(0.1)
        secret = sh(BIN, 'add', '--home', homes[0], dirs[0], '--secret').stdout.strip().split()[-1]
        for i in range(1, n):
            sh(BIN, 'add', '--home', homes[i], dirs[i], '--secret', secret)
        # Every receiver has a session with the writer (and the mesh settles) before the data comes.
        deadline = time.time() + 120
        while time.time() < deadline:
            st = json.loads(sh(BIN, 'status', '--home', homes[0], '--json').stdout)
            peers = sum(len([p for p in f.get('peers', []) if p.get('connected')]) for f in st.get('folders', []))
            if peers >= receivers: break
            time.sleep(0.2)
        else:
            raise SystemExit('receivers did not connect to the writer in 120 s')
        time.sleep(3)
        staging = os.path.join(base, 'staging')
        os.makedirs(staging)
        files = 16
        for k in range(files):
            with open(os.path.join(staging, 'data%02d.bin' % k), 'wb') as f:
                left = (a.mib << 20) // files
                block = 0
                while left:
                    b = min(left, 1 << 22)
                    f.write(os.urandom(b) if a.corpus == 'random' else logs(k * 4096 + block, b)); left -= b; block += 1
        want_sizes = tree(staging, False)
        want = tree(staging, True)
        tx0 = tx_bytes(0)
        t0 = time.time()
        for name in sorted(os.listdir(staging)):
            os.rename(os.path.join(staging, name), os.path.join(dirs[0], name))
        done = {}
        while len(done) < receivers and time.time() - t0 < a.timeout:
            for i in range(1, n):
                if i not in done and tree(dirs[i], False) == want_sizes:
                    done[i] = time.time() - t0
            time.sleep(0.05)
        if len(done) < receivers:
            raise SystemExit(json.dumps({'error': 'not converged in %d s' % a.timeout, 'done': done}))
        seconds = max(done.values())
        upload = tx_bytes(0) - tx0
        for i in range(1, n):
            if tree(dirs[i], True) != want:
                raise SystemExit('receiver %d holds different data' % i)
        return {'seconds': round(seconds, 2), 'first_s': round(min(done.values()), 2),
                'writer_upload_x': round(upload / (a.mib << 20), 2)}
    finally:
        for p in procs: p.terminate()
        for p in procs:
            try: p.wait(timeout=20)
            except subprocess.TimeoutExpired: p.kill()
        teardown(n)


if os.geteuid() != 0:
    sys.exit('swarm_bench.py needs root (network namespaces, tc)')
one = run(1)
if a.one_only:
    print(json.dumps({'mib': a.mib, 'rate': a.rate, 'corpus': a.corpus, 'compression': not a.no_compression, 'one': one}))
    sys.exit(0)
swarm = run(a.receivers)
print(json.dumps({'mib': a.mib, 'rate': a.rate, 'receivers': a.receivers, 'one': one, 'swarm': swarm,
                  'swarm_time_vs_one': round(swarm['seconds'] / one['seconds'], 2),
                  'targets_met': swarm['writer_upload_x'] <= 2 and swarm['seconds'] <= 2 * one['seconds']}))
