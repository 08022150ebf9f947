#!/usr/bin/env python3
"""Wire compression benchmark: two syncd daemons on loopback, one corpus, compression on and off.

usage: compression_bench.py --syncd .build/release/syncd [--size-mib 256] [--runs 3] [--corpus text,random]
                            [--workdir /tmp/compression-bench]

Corpora (generated once into WORKDIR/corpus-*, seeded, then reused):
  text    a third each of wiki-like markup, SQL INSERT text and log lines, in three files
  random  os.urandom, in four files
Each run: daemon A starts with the corpus in its folder and indexes it; then daemon B starts, joins
and adds the folder, and the clock runs from B's `add` until B holds every file (sizes, then
SHA-256). Reported per run: wire bytes that reached B (its status `bytesIn`: message bodies as
sent, i.e. deflated bytes when deflated) and over the loopback TCP ports (iptables, both ways,
headers included; null without root), the ratio to the data, and MB/s. Modes alternate
(off, on, off, on, ...) so drift on a shared machine hits both alike; the summary gives medians.
`off` is both daemons with --no-compression; `on` the default. Run it holding the build lock on a
release build: flock /tmp/syncd-build.lock python3 Benchmarks/compression_bench.py --syncd ...
"""
import argparse, hashlib, json, os, random, shutil, signal, statistics, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('--syncd', default=os.environ.get('SYNCD', '.build/release/syncd'))
ap.add_argument('--workdir', default='/tmp/compression-bench')
ap.add_argument('--size-mib', type=int, default=256)
ap.add_argument('--runs', type=int, default=3)
ap.add_argument('--corpus', default='text,random')
a = ap.parse_args()
a.syncd = os.path.abspath(a.syncd)
os.makedirs(a.workdir, exist_ok=True)


# ---------------------------------------------------------------- corpora
def words(rng, n):
    """A vocabulary of n made-up words of English-like syllables, shortest first (frequent words are
    short, as in English)."""
    onsets = ['', 'b', 'c', 'd', 'f', 'g', 'h', 'l', 'm', 'n', 'p', 'r', 's', 't', 'w', 'th', 'st', 'tr', 'pr', 'ch', 'sh', 'br', 'pl']
    vowels = ['a', 'e', 'i', 'o', 'u', 'ea', 'ou', 'io', 'ai', 'ee']
    codas = ['', '', 'n', 'r', 's', 't', 'l', 'nd', 'st', 'ng', 'rt', 'ck', 'nt', 'ss', 'tion', 'ment', 'ed', 'er', 'ing']
    vocab = set()
    while len(vocab) < n:
        k = 1 + min(3, int(rng.expovariate(1.2)))
        vocab.add(''.join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(k)))
    return sorted(vocab, key=lambda w: (len(w), w))


def zipf_picker(rng, vocab, s=1.1):
    """Words drawn by Zipf's law (rank r with weight 1/r^s): the profile of natural text."""
    cum, total = [], 0.0
    for i in range(len(vocab)):
        total += 1.0 / (i + 1) ** s; cum.append(total)
    def pick(k): return rng.choices(vocab, cum_weights=cum, k=k)
    return pick


def write_until(path, size, make_block):
    with open(path, 'w') as f:
        n = 0
        while n < size:
            block = make_block()
            f.write(block); n += len(block)
        f.truncate(size)


def gen_text(d, size):
    """Text-like data as it is found: a wiki dump (XML, markup, prose), SQL INSERT text (sequential
    ids, names and dates, free-text notes) and application logs (monotonic timestamps, a few hundred
    users and endpoints). Words are made up, drawn by Zipf's law over a vocabulary sorted short-first."""
    rng = random.Random(13)
    vocab = words(rng, 20000)
    pick = zipf_picker(rng, vocab)
    names = [w.title() for w in words(rng, 3000)[1000:]]
    domains = ['example.com', 'mail.example.org', 'corp.example.net', 'example.io']
    third = size // 3
    page = [100000]

    def sentence():
        s = pick(rng.randint(6, 22))
        if rng.random() < 0.25: s[rng.randrange(len(s))] = '[[%s]]' % ' '.join(pick(rng.randint(1, 2))).title()
        return ' '.join(s).capitalize() + '.'

    def wiki():
        out = []
        for _ in range(100):
            page[0] += rng.randint(1, 40)
            title = ' '.join(pick(rng.randint(1, 3))).title()
            out.append('  <page>\n    <title>%s</title>\n    <ns>0</ns>\n    <id>%d</id>\n    <revision>\n      <id>%d</id>\n'
                       '      <timestamp>2024-%02d-%02dT%02d:%02d:%02dZ</timestamp>\n      <contributor>\n        <username>%s</username>\n'
                       '      </contributor>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n      <text xml:space="preserve">'
                       % (title, page[0], page[0] * 7 + 13, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                          rng.randint(0, 59), rng.randint(0, 59), rng.choice(names)))
            out.append("{{Infobox %s\n| name = %s\n| type = %s\n| founded = %d\n}}\n'''%s''' is a %s.\n"
                       % (pick(1)[0], title, ' '.join(pick(2)), rng.randint(1800, 2020), title, ' '.join(pick(rng.randint(4, 10)))))
            for _ in range(rng.randint(2, 5)):
                out.append('\n== %s ==\n' % ' '.join(pick(rng.randint(1, 3))).title())
                for _ in range(rng.randint(1, 4)):
                    para = [sentence() for _ in range(rng.randint(2, 7))]
                    if rng.random() < 0.4:
                        para.append('<ref>{{cite web |url=https://www.%s.org/%s |title=%s |access-date=2023-%02d-%02d}}</ref>'
                                    % (pick(1)[0], '/'.join(pick(2)), ' '.join(pick(3)).title(), rng.randint(1, 12), rng.randint(1, 28)))
                    out.append(' '.join(para) + '\n\n')
            out.append('== References ==\n{{Reflist}}\n\n[[Category:%s]]\n[[Category:%s]]</text>\n    </revision>\n  </page>\n'
                       % (' '.join(pick(2)).title(), ' '.join(pick(2)).title()))
        return ''.join(out)

    order = [0]
    statuses = ['pending', 'paid', 'shipped', 'shipped', 'delivered', 'delivered', 'delivered', 'refunded']
    def sql():
        out = []
        for _ in range(100):
            rows = []
            for _ in range(50):
                order[0] += 1
                o = order[0]
                first, last = rng.choice(names), rng.choice(names)
                rows.append("(%d,%d,'%s %s','%s.%s@%s','%s',%d,%.2f,'2024-%02d-%02d %02d:%02d:%02d','%s')"
                            % (o, rng.randint(1, 50000), first, last, first.lower(), last.lower(), rng.choice(domains),
                               rng.choice(statuses), rng.randint(1, 9), rng.randint(100, 99999) / 100, 1 + o // 400000 % 12,
                               1 + o // 15000 % 28, o // 600 % 24, o // 10 % 60, o % 60, ' '.join(pick(rng.randint(0, 10)))))
            out.append('INSERT INTO `orders` (`id`,`customer_id`,`name`,`email`,`status`,`quantity`,`amount`,`created_at`,`note`) VALUES %s;\n'
                       % ','.join(rows))
        return ''.join(out)

    users = [n.lower() for n in names[:400]]
    endpoints = ['/api/v2/%s/%s' % (pick(1)[0], pick(1)[0]) for _ in range(150)]
    clock = [1714564800.0]
    levels = ['INFO'] * 20 + ['WARN'] * 2 + ['ERROR', 'DEBUG']
    methods = ['GET'] * 6 + ['POST', 'PUT', 'DELETE']
    codes = [200] * 30 + [201, 204, 304, 400, 404, 500]
    def log():
        out = []
        for _ in range(5000):
            clock[0] += rng.expovariate(200)
            level = rng.choice(levels)
            msg = 'request completed' if level == 'INFO' else ' '.join(pick(rng.randint(3, 9)))
            endpoint = rng.choice(endpoints)
            out.append('%s.%03dZ %-5s [http-nio-8080-exec-%d] c.e.api.%sController - %s method=%s path=%s/%d user=%s status=%d bytes=%d duration_ms=%d trace=%08x\n'
                       % (time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(clock[0])), int(clock[0] * 1000) % 1000, level, rng.randint(1, 32),
                          endpoint.split('/')[3].title(), msg, rng.choice(methods), endpoint, rng.randint(1, 20000), rng.choice(users),
                          rng.choice(codes), rng.randint(0, 60000), int(rng.expovariate(1 / 40)), rng.getrandbits(32)))
        return ''.join(out)

    write_until(os.path.join(d, 'enwiki-pages.xml'), third, wiki)
    write_until(os.path.join(d, 'orders.sql'), third, sql)
    write_until(os.path.join(d, 'app.log'), size - 2 * third, log)


def gen_random(d, size):
    for k in range(4):
        with open(os.path.join(d, 'random%d.bin' % k), 'wb') as f:
            n = size // 4
            while n:
                m = min(n, 1 << 22); f.write(os.urandom(m)); n -= m


def corpus(kind):
    d = os.path.join(a.workdir, 'corpus-%s-%d' % (kind, a.size_mib))
    if not os.path.exists(d + '/.done'):
        shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
        {'text': gen_text, 'random': gen_random}[kind](d, a.size_mib << 20)
        open(d + '/.done', 'w').close()
    return d, sorted(f for f in os.listdir(d) if not f.startswith('.'))


# ---------------------------------------------------------------- one run
def tree(d):
    out = {}
    for f in sorted(os.listdir(d)):
        p = os.path.join(d, f)
        if f.startswith('.') or not os.path.isfile(p): continue
        h = hashlib.sha256()
        with open(p, 'rb') as fh:
            for b in iter(lambda: fh.read(1 << 20), b''): h.update(b)
        out[f] = h.hexdigest()
    return out


def sizes(d):
    return {f: os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if not f.startswith('.') and os.path.isfile(os.path.join(d, f))}


class Wire:
    """TCP bytes on loopback to or from either daemon's port (both ways, headers included)."""
    def __init__(self, ports):
        self.ports = ports
        self.rule = ['OUTPUT', '-o', 'lo', '-p', 'tcp', '-m', 'multiport', '--ports', '%d,%d' % tuple(ports), '-j', 'ACCEPT']
        self.ok = bool(shutil.which('iptables')) and subprocess.run(['iptables', '-I'] + self.rule, capture_output=True).returncode == 0
    def read(self):
        if not self.ok: return None
        out = subprocess.run(['iptables', '-L', 'OUTPUT', '-v', '-n', '-x'], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if 'multiport ports %d,%d' % tuple(self.ports) in line: return int(line.split()[1])
        return None
    def close(self):
        if self.ok: subprocess.run(['iptables', '-D'] + self.rule, capture_output=True)


def status(home):
    r = subprocess.run([a.syncd, 'status', '--json', '--home', home], capture_output=True, text=True, env=dict(os.environ, SYNCD_HOME=home))
    return json.loads(r.stdout) if r.returncode in (0, 2) and r.stdout.strip() else None


def start(home, port, extra):
    os.makedirs(home, exist_ok=True)
    p = subprocess.Popen([a.syncd, 'daemon', '--home', home, '--listen', '127.0.0.1:%d' % port, '--no-lan-beacon'] + extra,
                         env=dict(os.environ, SYNCD_HOME=home), stdout=open(home + '.log', 'w'), stderr=subprocess.STDOUT)
    for _ in range(600):
        if status(home) is not None: return p
        time.sleep(0.1)
    raise SystemExit('daemon did not start: see %s.log' % home)


def run(kind, src, files, mode):
    w = os.path.join(a.workdir, 'run')
    shutil.rmtree(w, ignore_errors=True); os.makedirs(w)
    dirs, homes = [os.path.join(w, 'd%d' % i) for i in range(2)], [os.path.join(w, 'h%d' % i) for i in range(2)]
    os.makedirs(dirs[0]); os.makedirs(dirs[1])
    for f in files: os.link(os.path.join(src, f), os.path.join(dirs[0], f))
    total = sum(os.path.getsize(os.path.join(src, f)) for f in files)
    port = random.randint(20000, 27000)
    ports = [port, port + 1]
    extra = ['--no-compression'] if mode == 'off' else []
    procs = []
    wire = Wire(ports)
    try:
        procs.append(start(homes[0], ports[0], extra))
        out = subprocess.run([a.syncd, 'add', '--home', homes[0], dirs[0], '--secret'], capture_output=True, text=True, check=True,
                             env=dict(os.environ, SYNCD_HOME=homes[0])).stdout
        secret = out.strip().split()[-1]
        t = time.time()
        while True:   # A has indexed the corpus
            s = status(homes[0])
            f = s and s['folders'] and s['folders'][0]
            if f and f.get('localBytes') == total and not f.get('busy'): break
            if time.time() - t > 600: raise SystemExit('A did not index the corpus')
            time.sleep(0.1)
        procs.append(start(homes[1], ports[1], extra + ['--join', '127.0.0.1:%d' % ports[0]]))
        w0 = wire.read()
        t0 = time.time()
        subprocess.run([a.syncd, 'add', '--home', homes[1], dirs[1], '--secret', secret], capture_output=True, check=True,
                       env=dict(os.environ, SYNCD_HOME=homes[1]))
        want_sizes = {f: os.path.getsize(os.path.join(src, f)) for f in files}
        while sizes(dirs[1]) != want_sizes:
            if time.time() - t0 > 900: raise SystemExit('B did not converge')
            time.sleep(0.02)
        t1 = time.time()
        w1 = wire.read()
        if tree(dirs[1]) != tree(dirs[0]): raise SystemExit('B holds different bytes')
        bytes_in = status(homes[1])['folders'][0].get('bytesIn')
        return {'corpus': kind, 'compression': mode, 'bytes': total, 'bytes_in': bytes_in, 'ratio': round(bytes_in / total, 4),
                'tcp_bytes': None if w0 is None or w1 is None else w1 - w0, 'seconds': round(t1 - t0, 3),
                'MBps': round(total / (1 << 20) / (t1 - t0), 1)}
    finally:
        for p in procs: p.send_signal(signal.SIGTERM)
        for p in procs:
            try: p.wait(timeout=60)
            except subprocess.TimeoutExpired: p.kill()
        wire.close()
        shutil.rmtree(w, ignore_errors=True)


version = subprocess.run([a.syncd, '--version'], capture_output=True, text=True).stdout.strip()
summary = []
for kind in a.corpus.split(','):
    src, files = corpus(kind)
    results = {'off': [], 'on': []}
    for i in range(a.runs):
        for mode in ('off', 'on'):
            r = run(kind, src, files, mode)
            results[mode].append(r)
            print(json.dumps(r), flush=True)
    med = {m: statistics.median(r['MBps'] for r in rs) for m, rs in results.items()}
    summary.append({'corpus': kind, 'size_MiB': a.size_mib, 'runs': a.runs, 'syncd': version,
                    'ratio_on': statistics.median(r['ratio'] for r in results['on']),
                    'ratio_off': statistics.median(r['ratio'] for r in results['off']),
                    'MBps_on': med['on'], 'MBps_off': med['off'],
                    'throughput_change': round(med['on'] / med['off'] - 1, 3)})
    print(json.dumps(summary[-1]), flush=True)
