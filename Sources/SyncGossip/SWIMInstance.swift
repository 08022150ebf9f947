/// SWIM membership with Lifeguard, as a pure state machine (STYLE.md §1): every input is a
/// mutating call that takes the current time and returns directives; the shell carries them out
/// (UDP packets, TCP push/pull, TCP fallback pings) and reports back. No I/O, no clock, no
/// randomness beyond the seeded generator — the simulator replays any run exactly.
///
/// What it does, after memberlist (Lifeguard: Dadgar et al., "Lifeguard: Local Health Awareness
/// for More Accurate Failure Detection", 2018):
/// - probes one member per (health-scaled) probe interval, in a shuffled round-robin order;
///   no ack within the probe timeout → ping-req through k members (who nack if the target stays
///   silent) and a TCP fallback ping; still nothing at the interval's end → suspect;
/// - suspicion expires after a timeout that starts at max and shrinks towards min as independent
///   members confirm it; a suspected member refutes by raising its incarnation;
/// - local health (awareness) rises on missed nacks and refutations, falls on acks, and scales
///   the probe interval and timeout, so a slow node slows its own accusations;
/// - the buddy system: a ping to a suspected member carries the suspicion, so it refutes at once;
/// - broadcasts piggyback on every packet (≤ 1400 bytes) and are sent to `gossipNodes` members
///   every gossip interval, each at most retransmitMult × ceil(log10(N + 1)) times;
/// - push/pull full-state exchange, reconnect attempts to dead members, join retries with
///   backoff, tombstones, graceful leave.
public struct SWIMInstance: Sendable {
    public enum Directive: Sendable, Equatable {
        case send(to: Endpoint, [SWIMMessage])
        /// Exchange full state over TCP (then call `mergeRemoteState`), or `pushPullFailed`.
        case pushPull(to: Endpoint, join: Bool)
        /// TCP fallback probe; report with `streamPingResult`.
        case streamPing(to: Endpoint, target: UInt64, seq: UInt32)
        /// A member appeared or changed status, incarnation, address or metadata.
        case changed(MemberState)
    }

    struct Member: Sendable {
        var state: MemberState
        var changedAt: Nanos
    }

    struct Probe: Sendable {
        let seq: UInt32
        let target: UInt64
        let endpoint: Endpoint
        let timeoutAt: Nanos
        let endAt: Nanos
        var acked = false
        var indirectSent = false
        var expectedNacks = 0
        var nacks = 0
    }

    struct Relay: Sendable {
        let requester: Endpoint
        let requesterSeq: UInt32
        let wantNack: Bool
        let nackAt: Nanos
        let expiresAt: Nanos
        var nackSent = false
    }

    struct Suspicion: Sendable {
        let start: Nanos
        let min: Nanos
        let max: Nanos
        let k: Int
        let incarnation: UInt64
        var confirmers: Set<UInt64>
        var confirmations: Int { confirmers.count - 1 }
    }

    public let settings: SWIMSettings
    public private(set) var me: MemberState
    var members: [UInt64: Member] = [:]
    var rng: SplitMix64
    public private(set) var awareness = 0
    var seq: UInt32 = 0
    var probeOrder: [UInt64] = []
    var probeIndex = 0
    var probe: Probe?
    var relays: [UInt32: Relay] = [:]
    var suspicions: [UInt64: Suspicion] = [:]
    var broadcasts = BroadcastQueue()
    var nextProbeAt: Nanos
    var nextGossipAt: Nanos
    var nextPushPullAt: Nanos
    var nextReconnectAt: Nanos
    var nextJoinAt: Nanos = 0
    var nextReapAt: Nanos = 0
    var joinBackoff: Nanos
    var seeds: [Endpoint] = []
    public private(set) var isLeaving = false

    public init(settings: SWIMSettings = SWIMSettings(), name: UInt64, uid: UInt64, endpoint: Endpoint,
                meta: [UInt8] = [], seed: UInt64, now: Nanos) {
        self.settings = settings
        me = MemberState(name: name, uid: uid, incarnation: 1, status: .alive, endpoint: endpoint, meta: meta)
        rng = SplitMix64(seed: seed)
        // Stagger the periodic work so a cluster started at once does not act in lockstep.
        nextProbeAt = now + Nanos(rng.below(UInt64(settings.probeInterval)))
        nextGossipAt = now + Nanos(rng.below(UInt64(settings.gossipInterval)))
        nextPushPullAt = now + settings.pushPullInterval + Nanos(rng.below(UInt64(settings.pushPullInterval)))
        nextReconnectAt = now + settings.reconnectInterval + Nanos(rng.below(UInt64(settings.reconnectInterval)))
        joinBackoff = settings.joinRetryMin
    }

    // MARK: views

    /// Every member this instance knows, itself included, sorted by name.
    public var allMembers: [MemberState] { ([me] + members.values.map(\.state)).sorted { $0.name < $1.name } }

    public func member(_ name: UInt64) -> MemberState? { name == me.name ? me : members[name]?.state }

    /// Members believed alive or suspect, plus this one: the N of the formulas.
    public var liveCount: Int { 1 + members.values.filter { $0.state.status == .alive || $0.state.status == .suspect }.count }

    // MARK: inputs

    /// Starts (or restarts) joining through `seeds`: a push/pull with each now, then retries with
    /// backoff for as long as this node knows no live member.
    public mutating func join(_ seeds: [Endpoint], now: Nanos) -> [Directive] {
        self.seeds = seeds.filter { $0 != me.endpoint }
        joinBackoff = settings.joinRetryMin
        nextJoinAt = now + joinBackoff
        return self.seeds.map { .pushPull(to: $0, join: true) }
    }

    public mutating func tick(now: Nanos) -> [Directive] {
        var out: [Directive] = []
        expireSuspicions(now, &out)
        advanceProbe(now, &out)
        serveRelays(now, &out)
        if now >= nextGossipAt {
            nextGossipAt = max(nextGossipAt + settings.gossipInterval, now)
            gossip(now, &out)
        }
        if now >= nextPushPullAt {
            nextPushPullAt = now + SWIMMath.pushPullScale(interval: settings.pushPullInterval, n: liveCount)
            if let target = randomMembers(1, where: { $0.status == .alive }).first {
                out.append(.pushPull(to: target.endpoint, join: false))
            }
        }
        if now >= nextReconnectAt {
            nextReconnectAt = now + settings.reconnectInterval
            if let target = randomMembers(1, where: { $0.status == .dead }).first {
                out.append(.pushPull(to: target.endpoint, join: false))
            }
        }
        if !seeds.isEmpty && liveCount == 1 && now >= nextJoinAt && !isLeaving {
            joinBackoff = min(joinBackoff * 2, settings.joinRetryMax)
            nextJoinAt = now + joinBackoff
            out += seeds.map { .pushPull(to: $0, join: true) }
        }
        reapTombstones(now)
        return out
    }

    /// A UDP packet from `sender` (already decrypted and decoded by the shell).
    public mutating func receive(_ messages: [SWIMMessage], from sender: Endpoint, now: Nanos) -> [Directive] {
        var out: [Directive] = []
        for message in messages {
            switch message {
            case let .ping(seq, target, _):
                guard target == me.name || target == 0 else { continue }   // meant for a previous owner of this address
                out.append(.send(to: sender, packet([.ack(seq: seq)])))
            case let .pingReq(requesterSeq, target, endpoint, wantNack, _):
                let s = nextSeq()
                relays[s] = Relay(requester: sender, requesterSeq: requesterSeq, wantNack: wantNack,
                                  nackAt: now + settings.probeTimeout * 8 / 10, expiresAt: now + settings.probeInterval * 2)
                out.append(.send(to: endpoint, packet([.ping(seq: s, target: target, source: me.name)])))
            case .ack(let s):
                if var p = probe, p.seq == s {
                    if !p.acked && now <= p.timeoutAt { adjustAwareness(-1) }
                    p.acked = true
                    probe = p
                } else if let relay = relays.removeValue(forKey: s) {
                    out.append(.send(to: relay.requester, packet([.ack(seq: relay.requesterSeq)])))
                }
            case .nack(let s):
                if var p = probe, p.seq == s { p.nacks += 1; probe = p }
            case .alive(let state):
                alive(state, now, &out)
            case let .suspect(name, uid, incarnation, from):
                suspect(name, uid, incarnation, from: from, now, &out)
            case let .dead(name, uid, incarnation, from):
                dead(name, uid, incarnation, from: from, now, &out)
            }
        }
        return out
    }

    /// The TCP fallback ping's outcome. `refused` means the target's host answered that nothing
    /// listens on its port (TCP RST): the process is gone, so the probe fails now instead of at
    /// the end of the interval — the suspicion timeout still gives a live member time to refute.
    public mutating func streamPingResult(seq s: UInt32, reachable: Bool, refused: Bool = false,
                                          now: Nanos) -> [Directive] {
        guard var p = probe, p.seq == s else { return [] }
        if reachable {
            p.acked = true
            probe = p
            return []
        }
        guard refused, !p.acked else { return [] }
        probe = nil
        var out: [Directive] = []
        if let m = members[p.target], m.state.status == .alive || m.state.status == .suspect {
            suspect(m.state.name, m.state.uid, m.state.incarnation, from: me.name, now, &out)
        }
        return out
    }

    /// Everything we know, for a push/pull exchange.
    public var localState: [MemberState] { allMembers }

    /// A peer's full state from push/pull. A member the peer believes dead is only suspected here
    /// (memberlist does the same): one peer's stale view must not kill a member outright.
    public mutating func mergeRemoteState(_ remote: [MemberState], now: Nanos) -> [Directive] {
        var out: [Directive] = []
        for m in remote {
            switch m.status {
            case .alive: alive(m, now, &out)
            case .suspect, .dead: suspect(m.name, m.uid, m.incarnation, from: me.name, now, &out)
            case .left: dead(m.name, m.uid, m.incarnation, from: m.name, now, &out)
            }
        }
        return out
    }

    /// A push/pull attempt failed (seed down, partition): nothing to do but wait for the retry.
    public mutating func pushPullFailed(to endpoint: Endpoint, now: Nanos) -> [Directive] { [] }

    /// New metadata (folders, sequences): a new incarnation, announced in the next gossip round.
    public mutating func updateMeta(_ meta: [UInt8], now: Nanos) -> [Directive] {
        me.meta = meta
        me.incarnation += 1
        broadcasts.add(.alive(me))
        return []
    }

    /// Graceful leave: announce it to `gossipNodes` members at once; the shell keeps gossiping for
    /// a moment, then stops.
    public mutating func leave(now: Nanos) -> [Directive] {
        isLeaving = true
        me.incarnation += 1
        me.status = .left
        let goodbye = SWIMMessage.dead(name: me.name, uid: me.uid, incarnation: me.incarnation, from: me.name)
        broadcasts.add(goodbye)
        return randomMembers(settings.gossipNodes, where: { $0.status == .alive || $0.status == .suspect })
            .map { .send(to: $0.endpoint, [goodbye]) }
    }

    // MARK: probing

    private mutating func advanceProbe(_ now: Nanos, _ out: inout [Directive]) {
        if var p = probe {
            if !p.acked && !p.indirectSent && now >= p.timeoutAt {
                p.indirectSent = true
                let helpers = randomMembers(settings.indirectChecks) { $0.status == .alive && $0.name != p.target }
                for helper in helpers {
                    out.append(.send(to: helper.endpoint, packet([.pingReq(seq: p.seq, target: p.target, endpoint: p.endpoint,
                                                                           wantNack: true, source: me.name)])))
                }
                p.expectedNacks = helpers.count
                out.append(.streamPing(to: p.endpoint, target: p.target, seq: p.seq))
            }
            probe = p
            guard now >= p.endAt else { return }
            probe = nil
            if !p.acked {
                // Lifeguard: missing nacks mean our own network or CPU is the problem.
                adjustAwareness(p.expectedNacks > 0 ? p.expectedNacks - p.nacks : 1)
                if let m = members[p.target], m.state.status == .alive || m.state.status == .suspect {
                    suspect(m.state.name, m.state.uid, m.state.incarnation, from: me.name, now, &out)
                }
            }
        }
        guard probe == nil, now >= nextProbeAt, !isLeaving else { return }
        let interval = SWIMMath.scaled(settings.probeInterval, health: awareness)
        nextProbeAt = now + interval
        guard let target = nextProbeTarget() else { return }
        let s = nextSeq()
        probe = Probe(seq: s, target: target.name, endpoint: target.endpoint,
                      timeoutAt: now + SWIMMath.scaled(settings.probeTimeout, health: awareness), endAt: now + interval)
        var first: [SWIMMessage] = [.ping(seq: s, target: target.name, source: me.name)]
        if target.status == .suspect {   // the buddy system: tell it, so it can refute
            first.append(.suspect(name: target.name, uid: target.uid, incarnation: target.incarnation, from: me.name))
        }
        out.append(.send(to: target.endpoint, packet(first)))
    }

    /// Shuffled round robin: everyone once per pass, a fresh order each pass.
    mutating func nextProbeTarget() -> MemberState? {
        for _ in 0..<2 {
            while probeIndex < probeOrder.count {
                let name = probeOrder[probeIndex]
                probeIndex += 1
                if let m = members[name], m.state.status == .alive || m.state.status == .suspect { return m.state }
            }
            probeOrder = members.keys.sorted()
            rng.shuffle(&probeOrder)
            probeIndex = 0
        }
        return nil
    }

    private mutating func serveRelays(_ now: Nanos, _ out: inout [Directive]) {
        for (s, relay) in relays {
            if now >= relay.expiresAt { relays[s] = nil; continue }
            if relay.wantNack && !relay.nackSent && now >= relay.nackAt {
                relays[s]?.nackSent = true
                out.append(.send(to: relay.requester, packet([.nack(seq: relay.requesterSeq)])))
            }
        }
    }

    // MARK: suspicion and rumours

    private mutating func expireSuspicions(_ now: Nanos, _ out: inout [Directive]) {
        for (name, s) in suspicions {
            let remaining = s.k < 1 ? s.min - (now - s.start)
                : SWIMMath.remainingSuspicionTime(confirmations: min(s.confirmations, s.k), k: s.k, elapsed: now - s.start,
                                                  min: s.min, max: s.max)
            guard remaining <= 0 else { continue }
            suspicions[name] = nil
            if let m = members[name], m.state.status == .suspect, m.state.incarnation == s.incarnation {
                dead(name, m.state.uid, s.incarnation, from: me.name, now, &out)
            }
        }
    }

    mutating func alive(_ state: MemberState, _ now: Nanos, _ out: inout [Directive]) {
        if state.name == me.name { return }
        var incoming = state
        incoming.status = .alive
        if let existing = members[state.name], existing.state.uid == state.uid {
            guard state.incarnation > existing.state.incarnation else { return }
        }
        // New member, a new life of a known one (new uid), or a higher incarnation.
        let isNew = members[state.name] == nil
        members[state.name] = Member(state: incoming, changedAt: now)
        suspicions[state.name] = nil
        if isNew { probeOrder.insert(state.name, at: Int(rng.below(UInt64(probeOrder.count + 1)))) }
        broadcasts.add(.alive(incoming))
        out.append(.changed(incoming))
    }

    mutating func suspect(_ name: UInt64, _ uid: UInt64, _ incarnation: UInt64, from: UInt64, _ now: Nanos,
                          _ out: inout [Directive]) {
        if name == me.name {
            if uid == me.uid && !isLeaving { refute(accused: incarnation) }
            return
        }
        guard var m = members[name], m.state.uid == uid, incarnation >= m.state.incarnation else { return }
        switch m.state.status {
        case .dead, .left:
            return
        case .suspect:
            guard incarnation == m.state.incarnation, var s = suspicions[name], !s.confirmers.contains(from) else { return }
            s.confirmers.insert(from)
            suspicions[name] = s
            broadcasts.add(.suspect(name: name, uid: uid, incarnation: incarnation, from: from))
        case .alive:
            m.state.status = .suspect
            m.state.incarnation = incarnation
            m.changedAt = now
            members[name] = m
            let n = liveCount
            let minTimeout = SWIMMath.suspicionTimeout(mult: settings.suspicionMult, n: n, interval: settings.probeInterval)
            let k = n - 2 < settings.suspicionMult - 2 ? 0 : settings.suspicionMult - 2
            suspicions[name] = Suspicion(start: now, min: minTimeout,
                                         max: k < 1 ? minTimeout : Nanos(settings.suspicionMaxTimeoutMult) * minTimeout,
                                         k: k, incarnation: incarnation, confirmers: [from])
            broadcasts.add(.suspect(name: name, uid: uid, incarnation: incarnation, from: from))
            out.append(.changed(m.state))
        }
    }

    mutating func dead(_ name: UInt64, _ uid: UInt64, _ incarnation: UInt64, from: UInt64, _ now: Nanos,
                       _ out: inout [Directive]) {
        if name == me.name {
            if uid == me.uid && !isLeaving { refute(accused: incarnation) }
            return
        }
        guard var m = members[name], m.state.uid == uid, incarnation >= m.state.incarnation else { return }
        guard m.state.status == .alive || m.state.status == .suspect else { return }   // dead is terminal
        m.state.status = from == name ? .left : .dead
        m.state.incarnation = incarnation
        m.changedAt = now
        members[name] = m
        suspicions[name] = nil
        broadcasts.add(.dead(name: name, uid: uid, incarnation: incarnation, from: from))
        out.append(.changed(m.state))
    }

    /// Someone suspects or declared us: a higher incarnation wins over the rumour.
    private mutating func refute(accused: UInt64) {
        me.incarnation = max(me.incarnation, accused) + 1
        broadcasts.add(.alive(me))
        adjustAwareness(1)
    }

    mutating func adjustAwareness(_ delta: Int) {
        awareness = min(max(awareness + delta, 0), settings.awarenessMaxMultiplier - 1)
    }

    // MARK: dissemination

    private mutating func gossip(_ now: Nanos, _ out: inout [Directive]) {
        guard !broadcasts.isEmpty else { return }
        let recentlyDead = Set(members.values.filter {
            $0.state.status == .dead && now - $0.changedAt < settings.gossipToTheDeadTime
        }.map(\.state.name))
        let targets = randomMembers(settings.gossipNodes) { m in
            m.status == .alive || m.status == .suspect || recentlyDead.contains(m.name)
        }
        for t in targets {
            let messages = packet([])
            if messages.isEmpty { break }
            out.append(.send(to: t.endpoint, messages))
        }
    }

    /// `first` plus as many pending broadcasts as fit in the packet budget.
    mutating func packet(_ first: [SWIMMessage]) -> [SWIMMessage] {
        let used = 1 + first.reduce(0) { $0 + SWIMCodec.size($1) }
        let limit = SWIMMath.retransmitLimit(mult: settings.retransmitMult, n: liveCount)
        return first + broadcasts.take(budget: settings.packetBudget - used, maxCount: 255 - first.count, limit: limit)
    }

    private mutating func reapTombstones(_ now: Nanos) {
        guard now >= nextReapAt else { return }
        nextReapAt = now + .seconds(1)
        for (name, m) in members where (m.state.status == .dead || m.state.status == .left)
            && now - m.changedAt > settings.tombstoneTimeout {
            members[name] = nil
        }
    }

    private mutating func nextSeq() -> UInt32 {
        seq &+= 1
        return seq
    }

    /// Up to `count` distinct random members matching `filter`.
    mutating func randomMembers(_ count: Int, where filter: (MemberState) -> Bool) -> [MemberState] {
        var candidates = members.values.map(\.state).filter(filter).sorted { $0.name < $1.name }
        guard candidates.count > count else { return candidates }
        for i in 0..<count {
            let j = i + Int(rng.below(UInt64(candidates.count - i)))
            candidates.swapAt(i, j)
        }
        return Array(candidates.prefix(count))
    }
}

/// Pending rumours, each sent at most `limit` times, the least-sent first; a newer rumour about a
/// member replaces the older one.
struct BroadcastQueue: Sendable {
    struct Item: Sendable {
        let message: SWIMMessage
        let size: Int
        let order: UInt64
        var transmits = 0
    }

    private(set) var items: [Item] = []
    private var counter: UInt64 = 0

    var isEmpty: Bool { items.isEmpty }

    mutating func add(_ message: SWIMMessage) {
        if let subject = message.subject { items.removeAll { $0.message.subject == subject } }
        counter += 1
        items.append(Item(message: message, size: SWIMCodec.size(message), order: counter))
    }

    mutating func take(budget: Int, maxCount: Int, limit: Int) -> [SWIMMessage] {
        guard !items.isEmpty, budget > 0 else { return [] }
        items.sort { $0.transmits != $1.transmits ? $0.transmits < $1.transmits : $0.order > $1.order }
        var left = budget
        var out: [SWIMMessage] = []
        for i in items.indices where out.count < maxCount && items[i].size <= left {
            out.append(items[i].message)
            left -= items[i].size
            items[i].transmits += 1
        }
        items.removeAll { $0.transmits >= limit }
        return out
    }
}

/// SplitMix64: small, fast, seedable; good enough to pick probe targets.
public struct SplitMix64: Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in 0 ..< n (n > 0), by rejection.
    public mutating func below(_ n: UInt64) -> UInt64 {
        guard n > 1 else { return 0 }
        let limit = UInt64.max - UInt64.max % n
        while true {
            let x = next()
            if x < limit { return x % n }
        }
    }

    public mutating func shuffle<T>(_ array: inout [T]) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            array.swapAt(i, Int(below(UInt64(i + 1))))
        }
    }

    public mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
}
