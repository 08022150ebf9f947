#!/usr/bin/env python3
"""Daemon-level index benchmarks for syncd: one JSON line per workload.

usage: index_bench.py [--syncd PATH] [--workdir DIR] [index rescan latency rss ...]
  index    initial index of 100,000 x 4 KiB files in 1,000 directories   -> files/s
  rescan   full rescan of that unchanged tree (daemon restart)           -> seconds
  latency  write a 4 KiB file, time until it is in the index (x 50)      -> median ms
  rss      index 1 GiB (4 x 256 MiB random files), peak RSS of daemon   -> MB, MB/s
Files are created before timing and sit in the page cache (24 GiB RAM here): these are
warm-cache figures, which is what a running daemon sees for fresh writes.
"""
import argparse, json, os, re, shutil, signal, sqlite3, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('workloads', nargs='*', default=['index', 'rescan', 'latency', 'rss'])
ap.add_argument('--syncd', default=os.environ.get('SYNCD', 'syncd'))
ap.add_argument('--workdir', default='/tmp/syncd-index-bench')
ap.add_argument('--files', type=int, default=100_000)
a = ap.parse_args()
shutil.rmtree(a.workdir, ignore_errors=True)
os.makedirs(a.workdir)


class Daemon:
    def __init__(self, name):
        self.home = os.path.join(a.workdir, name + '-home')
        self.env = dict(os.environ, SYNCD_HOME=self.home)
        self.proc = None
        self.log = os.path.join(a.workdir, name + '.log')

    def start(self):
        self.proc = subprocess.Popen([a.syncd, 'daemon', '--listen', '127.0.0.1:0'], env=self.env,
                                     stdout=open(self.log, 'a'), stderr=subprocess.STDOUT)
        while self.cli('status').returncode != 0:
            if self.proc.poll() is not None: sys.exit(open(self.log).read())
            time.sleep(0.02)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM); self.proc.wait()

    def cli(self, *args):
        return subprocess.run([a.syncd] + list(args), env=self.env, capture_output=True, text=True)

    def folder(self):
        return json.loads(self.cli('status', '--json').stdout)['folders'][0]

    def wait(self, cond, timeout=600):
        t0 = time.time()
        while time.time() - t0 < timeout:
            f = self.folder()
            if cond(f): return f
            time.sleep(0.01)
        raise SystemExit('timeout waiting; last %r' % f)

    def peak_rss_mb(self):
        for line in open('/proc/%d/status' % self.proc.pid):
            if line.startswith('VmHWM:'): return int(line.split()[1]) / 1024

    def last_scan_ms(self):
        hits = re.findall(r'scan: (\d+) changes.* in ([\d.]+) ms', open(self.log).read())
        return float(hits[-1][1]) if hits else None


def emit(**kw):
    print(json.dumps(kw), flush=True)


tree = os.path.join(a.workdir, 'tree')
big = Daemon('tree')


def make_tree():
    block = os.urandom(4096)
    for d in range(1000):
        p = os.path.join(tree, 'd%03d' % d)
        os.makedirs(p)
        for f in range(a.files // 1000):
            with open(os.path.join(p, 'f%03d' % f), 'wb') as fh:
                fh.write(block[:4096 - 8] + (d * 1000 + f).to_bytes(8, 'little'))


if 'index' in a.workloads or 'rescan' in a.workloads:
    make_tree()
    big.start()
    t0 = time.time()
    big.cli('add', tree, '--secret')
    big.wait(lambda f: f['state'] == 'idle' and f['localFiles'] == a.files)
    t = time.time() - t0
    emit(workload='index', files=a.files, seconds=round(t, 3), files_per_s=round(a.files / t),
         scan_ms_from_log=big.last_scan_ms(), peak_rss_mb=round(big.peak_rss_mb(), 1))

if 'rescan' in a.workloads:
    big.stop()
    big.start()
    big.wait(lambda f: f['state'] == 'idle' and big.last_scan_ms() is not None and
             open(big.log).read().count('scan: ') >= 2)
    emit(workload='rescan', files=a.files, seconds=round(big.last_scan_ms() / 1000, 3),
         peak_rss_mb=round(big.peak_rss_mb(), 1))
    big.stop()

if 'latency' in a.workloads:
    d = Daemon('lat')
    data = os.path.join(a.workdir, 'lat')
    d.start()
    d.cli('add', data, '--secret')
    d.wait(lambda f: f['state'] == 'idle')
    db = sqlite3.connect('file:%s/index.db?mode=ro' % d.home, uri=True, isolation_level=None)
    samples = []
    for i in range(50):
        name = 'edit-%02d.bin' % i
        payload = os.urandom(4096)
        t0 = time.time()
        with open(os.path.join(data, name), 'wb') as fh:
            fh.write(payload)
        while not db.execute('SELECT 1 FROM file WHERE path = ? AND size = 4096', (name,)).fetchone():
            time.sleep(0.0005)
        samples.append((time.time() - t0) * 1000)
        time.sleep(0.05)
    d.stop()
    samples.sort()
    emit(workload='latency', n=len(samples), median_ms=round(statistics.median(samples), 1),
         p90_ms=round(samples[int(len(samples) * 0.9)], 1), max_ms=round(samples[-1], 1))

if 'rss' in a.workloads:
    d = Daemon('rss')
    data = os.path.join(a.workdir, 'gib')
    os.makedirs(data)
    for i in range(4):
        with open(os.path.join(data, 'big%d.bin' % i), 'wb') as fh:
            for _ in range(64):
                fh.write(os.urandom(4 << 20))
    d.start()
    t0 = time.time()
    d.cli('add', data, '--secret')
    f = d.wait(lambda f: f['state'] == 'idle' and f['localBytes'] == 1 << 30)
    t = time.time() - t0
    emit(workload='rss', bytes=1 << 30, seconds=round(t, 3), MB_per_s=round((1 << 30) / t / 1e6),
         peak_rss_mb=round(d.peak_rss_mb(), 1))
    d.stop()
