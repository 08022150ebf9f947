@testable import SyncGossip

/// A deterministic in-process cluster: N `SWIMInstance`s on a virtual clock, a network with
/// latency, random loss, partitions and one-way blocks, and nodes that crash, restart or freeze
/// (a CPU-starved process: it neither runs timers nor reads packets, then catches up).
/// Every packet goes through `SWIMCodec`, so sizes and encodings are real.
struct Simulation {
    struct Node {
        var swim: SWIMInstance
        var up = true
        var frozenUntil: Nanos = 0
        var inbox: [(from: Endpoint, packet: [UInt8])] = []
    }

    struct InFlight {
        let at: Nanos
        let to: Int
        let from: Endpoint
        let packet: [UInt8]
    }

    var nodes: [Node] = []
    var now: Nanos = 0
    var rng: SplitMix64
    var loss = 0.0
    var latency: ClosedRange<Nanos> = .ms(1)...(.ms(4))
    /// Directed UDP blocks: (from, to) node indices.
    var blocked: Set<[Int]> = []
    /// TCP follows the same blocks unless a test says otherwise (one-way UDP loss keeps TCP).
    var tcpBlocked: Set<[Int]> = []
    var flying: [InFlight] = []
    var maxPacket = 0
    let settings: SWIMSettings

    init(count: Int, settings: SWIMSettings = SWIMSettings(), seed: UInt64 = 1) {
        self.settings = settings
        rng = SplitMix64(seed: seed)
        for i in 0..<count { nodes.append(Node(swim: Self.instance(i, uid: 1, settings: settings, now: 0))) }
    }

    static func endpoint(_ i: Int) -> Endpoint { Endpoint(host: "10.\(i / 256).\(i % 256).1", port: 7700) }
    static func name(_ i: Int) -> UInt64 { UInt64(i + 1) }

    static func instance(_ i: Int, uid: UInt64, settings: SWIMSettings, now: Nanos) -> SWIMInstance {
        SWIMInstance(settings: settings, name: name(i), uid: uid, endpoint: endpoint(i), seed: UInt64(i) &* 7919 &+ uid, now: now)
    }

    func index(of endpoint: Endpoint) -> Int? {
        let parts = endpoint.host.split(separator: ".")
        guard parts.count == 4, let a = Int(parts[1]), let b = Int(parts[2]) else { return nil }
        return a * 256 + b
    }

    /// Everyone knows everyone (as after a long-settled cluster), with empty rumour queues.
    mutating func converge(_ members: Range<Int>? = nil) {
        let range = members ?? 0..<nodes.count
        let states = range.map { nodes[$0].swim.me }
        for i in range {
            _ = nodes[i].swim.mergeRemoteState(states, now: now)
            nodes[i].swim.broadcasts = BroadcastQueue()
        }
    }

    func isRunning(_ i: Int) -> Bool { nodes[i].up && now >= nodes[i].frozenUntil }

    mutating func run(for duration: Nanos, step: Nanos = .ms(10), until done: ((Simulation) -> Bool)? = nil) {
        let end = now + duration
        while now < end {
            now += step
            deliver()
            for i in nodes.indices where isRunning(i) {
                // A thawed node first reads what queued up while it was frozen.
                let queued = nodes[i].inbox
                nodes[i].inbox = []
                for (from, packet) in queued { receive(i, from: from, packet: packet) }
                execute(i, nodes[i].swim.tick(now: now))
            }
            if let done, done(self) { return }
        }
    }

    private mutating func deliver() {
        let due = flying.filter { $0.at <= now }
        flying.removeAll { $0.at <= now }
        for p in due where nodes[p.to].up {
            if isRunning(p.to) { receive(p.to, from: p.from, packet: p.packet) } else { nodes[p.to].inbox.append((p.from, p.packet)) }
        }
    }

    private mutating func receive(_ i: Int, from: Endpoint, packet: [UInt8]) {
        guard let messages = try? SWIMCodec.decode(packet) else { preconditionFailure("undecodable packet") }
        execute(i, nodes[i].swim.receive(messages, from: from, now: now))
    }

    mutating func execute(_ i: Int, _ directives: [SWIMInstance.Directive]) {
        for d in directives {
            switch d {
            case let .send(to, messages):
                let packet = SWIMCodec.encode(messages)
                maxPacket = max(maxPacket, packet.count)
                guard let j = index(of: to), !blocked.contains([i, j]), !rng.chance(loss) else { continue }
                let delay = latency.lowerBound + Nanos(rng.below(UInt64(latency.upperBound - latency.lowerBound + 1)))
                flying.append(InFlight(at: now + delay, to: j, from: nodes[i].swim.me.endpoint, packet: packet))
            case let .pushPull(to, _):
                guard let j = index(of: to), tcpReachable(i, j), nodes[j].up, now >= nodes[j].frozenUntil else {
                    execute(i, nodes[i].swim.pushPullFailed(to: to, now: now))
                    continue
                }
                let mine = nodes[i].swim.localState, theirs = nodes[j].swim.localState
                execute(j, nodes[j].swim.mergeRemoteState(mine, now: now))
                execute(i, nodes[i].swim.mergeRemoteState(theirs, now: now))
            case let .streamPing(to, target, seq):
                let ok = index(of: to).map { j in
                    tcpReachable(i, j) && isRunning(j) && nodes[j].swim.me.name == target
                } ?? false
                // A crashed process's host answers at once with a reset; a frozen one just times out.
                let refused = index(of: to).map { j in tcpReachable(i, j) && !nodes[j].up } ?? false
                execute(i, nodes[i].swim.streamPingResult(seq: seq, reachable: ok, refused: refused, now: now))
            case .changed:
                break
            }
        }
    }

    func tcpReachable(_ i: Int, _ j: Int) -> Bool { !tcpBlocked.contains([i, j]) && !tcpBlocked.contains([j, i]) }

    /// Splits the cluster in two for UDP and TCP alike.
    mutating func partition(_ a: Range<Int>, _ b: Range<Int>) {
        for i in a { for j in b { blocked.formUnion([[i, j], [j, i]]); tcpBlocked.formUnion([[i, j], [j, i]]) } }
    }

    mutating func heal() { blocked = []; tcpBlocked = [] }

    /// How node `viewer` sees `subject`.
    func status(of subject: Int, seenBy viewer: Int) -> MemberStatus? {
        nodes[viewer].swim.member(Self.name(subject))?.status
    }

    /// Fraction of running nodes (other than `subject`) that see `subject` alive with its current uid.
    func fractionSeeingAlive(_ subject: Int, among viewers: [Int]? = nil) -> Double {
        let uid = nodes[subject].swim.me.uid
        let others = (viewers ?? Array(nodes.indices)).filter { $0 != subject && nodes[$0].up }
        let seeing = others.filter { v in
            guard let m = nodes[v].swim.member(Self.name(subject)) else { return false }
            return m.status == .alive && m.uid == uid
        }
        return Double(seeing.count) / Double(max(others.count, 1))
    }

    /// Every (viewer, subject) pair where a running viewer believes a running subject dead.
    func falseDeaths(among subjects: [Int]? = nil) -> [(viewer: Int, subject: Int)] {
        var out: [(Int, Int)] = []
        for v in nodes.indices where nodes[v].up {
            for s in subjects ?? Array(nodes.indices) where s != v && nodes[s].up {
                if let m = nodes[v].swim.member(Self.name(s)), m.uid == nodes[s].swim.me.uid, m.status == .dead {
                    out.append((v, s))
                }
            }
        }
        return out
    }
}
