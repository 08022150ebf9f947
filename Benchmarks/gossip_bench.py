#!/usr/bin/env python3
"""Gossip benchmarks for syncd, side by side with Serf (../shared/anchors/serf_cluster.py) in one run.

usage: gossip_bench.py [--syncd PATH] [--nodes 20] [detect] [loss --minutes 10 --loss 10]
  detect  N daemons on loopback join through one seed; kill -9 one; time until EVERY other
          daemon reports it dead (Serf's anchor samples every N/5-th node). Then runs the Serf
          anchor with the same N and prints both.
  loss    N daemons in a network namespace whose loopback drops --loss % of packets (tc netem);
          for --minutes, poll every daemon: any live daemon reported dead by anyone is a failure.
Needs root for `loss` (ip netns, and tc netem or, where the kernel lacks sch_netem, iptables:
apt-get install iptables). One JSON line per workload.
"""
import argparse, json, os, shutil, signal, subprocess, sys, time

ap = argparse.ArgumentParser()
ap.add_argument('workloads', nargs='*', default=['detect'])
ap.add_argument('--syncd', default=os.environ.get('SYNCD', 'syncd'))
ap.add_argument('--nodes', type=int, default=20)
ap.add_argument('--minutes', type=float, default=10)
ap.add_argument('--loss', type=float, default=10)
ap.add_argument('--workdir', default='/tmp/syncd-gossip-bench')
ap.add_argument('--anchor', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), '../../shared/anchors/serf_cluster.py'))
a = ap.parse_args()
BASE = 27700


def cli(home, *args):
    return subprocess.run([a.syncd, *args], env=dict(os.environ, SYNCD_HOME=home), capture_output=True, text=True)


def peers(home):
    r = cli(home, 'peers', '--json')
    try: return {m['address']: m['status'] for m in json.loads(r.stdout)['members']}
    except Exception: return {}


def start(n, netns=None):
    shutil.rmtree(a.workdir, ignore_errors=True); os.makedirs(a.workdir)
    procs, homes = [], []
    for i in range(n):
        home = os.path.join(a.workdir, 'h%d' % i); homes.append(home)
        cmd = [a.syncd, 'daemon', '--listen', '127.0.0.1:%d' % (BASE + i), '--no-lan-beacon']
        if i: cmd += ['--join', '127.0.0.1:%d' % BASE]
        if netns: cmd = ['ip', 'netns', 'exec', netns] + cmd
        procs.append(subprocess.Popen(cmd, env=dict(os.environ, SYNCD_HOME=home),
                                      stdout=open(home + '.log', 'w'), stderr=subprocess.STDOUT))
        time.sleep(0.05)
    return procs, homes


def stop(procs):
    for p in procs:
        if p.poll() is None: p.send_signal(signal.SIGTERM)
    for p in procs:
        try: p.wait(10)
        except subprocess.TimeoutExpired: p.kill()


POOL = None


def views(homes):
    """Every daemon's view, polled concurrently so a check of 20 daemons takes one CLI round trip."""
    global POOL
    if POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        POOL = ThreadPoolExecutor(32)
    return list(POOL.map(peers, homes))


def all_alive(homes, n):
    return all(sum(1 for s in v.values() if s == 'alive') == n for v in views(homes))


def detect():
    n = a.nodes
    t0 = time.time()
    procs, homes = start(n)
    try:
        while not all_alive(homes, n): time.sleep(0.1)
        t_join = time.time() - t0
        time.sleep(3)
        victim = n - 1
        procs[victim].send_signal(signal.SIGKILL); tk = time.time()
        addr = '127.0.0.1:%d' % (BASE + victim)
        while not all(v.get(addr) == 'dead' for v in views(homes[:-1])): time.sleep(0.05)
        t_fail = time.time() - tk
    finally:
        stop(procs)
    mine = {'tool': 'syncd', 'nodes': n, 'all_joined_s': round(t_join, 2), 'failure_detected_by_all_s': round(t_fail, 2),
            'checked': 'every node'}
    print(json.dumps(mine), flush=True)
    if shutil.which('serf'):
        out = subprocess.run([sys.executable, a.anchor, str(n)], capture_output=True, text=True).stdout.strip()
        print(out, flush=True)
        try:
            serf = json.loads(out)
            print(json.dumps({'compare': 'failure detection', 'syncd_s': mine['failure_detected_by_all_s'],
                              'serf_s': serf['failure_detected_by_all_s'],
                              'ratio_syncd_over_serf': round(mine['failure_detected_by_all_s'] / serf['failure_detected_by_all_s'], 2)}))
        except Exception:
            pass


def loss():
    ns = 'syncdgossip'
    subprocess.run(['ip', 'netns', 'del', ns], stderr=subprocess.DEVNULL)
    subprocess.run(['ip', 'netns', 'add', ns], check=True)
    subprocess.run(['ip', 'netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up'], check=True)
    netem = subprocess.run(['ip', 'netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'lo', 'root', 'netem', 'loss', '%g%%' % a.loss])
    injector = 'tc netem'
    if netem.returncode != 0:
        # Kernels without sch_netem (this sandbox's): drop the same share with iptables' statistic match.
        subprocess.run(['ip', 'netns', 'exec', ns, 'iptables', '-A', 'INPUT', '-m', 'statistic', '--mode', 'random',
                        '--probability', str(a.loss / 100), '-j', 'DROP'], check=True)
        injector = 'iptables statistic'
    n = a.nodes
    procs, homes = start(n, netns=ns)
    false_dead, polls, suspects = [], 0, 0
    try:
        deadline = time.time() + 60
        while not all_alive(homes, n) and time.time() < deadline: time.sleep(0.5)
        joined = all_alive(homes, n)
        end = time.time() + a.minutes * 60
        while time.time() < end:
            for h, view in zip(homes, views(homes)):
                polls += 1
                for addr, status in view.items():
                    if status == 'dead': false_dead.append((h, addr, round(time.time(), 1)))
                    if status == 'suspect': suspects += 1
            time.sleep(2)
    finally:
        stop(procs)
        subprocess.run(['ip', 'netns', 'del', ns])
    print(json.dumps({'tool': 'syncd', 'workload': 'loss', 'injector': injector, 'nodes': n, 'loss_pct': a.loss, 'minutes': a.minutes,
                      'joined': joined, 'polls': polls, 'suspect_sightings': suspects,
                      'live_nodes_declared_dead': len(false_dead), 'first': false_dead[:3]}), flush=True)


for w in a.workloads:
    {'detect': detect, 'loss': loss}[w]()
